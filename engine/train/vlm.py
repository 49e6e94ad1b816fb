"""Vision-language recipe: SFT (assistant-only loss) and DPO with LoRA on image+text conversations.

Selected by the base model, not by a config key: `is_vlm_model(model_dir)` is true for LLaVA-,
Qwen-VL-, Idefics/SmolVLM-class models (a known `model_type` or a `vision_config` in config.json),
and the launcher sends `sft` and `dpo` runs on such a model here. Data is a JSONL whose messages
carry image parts (see images.py and docs/training-data.md); every image is validated before the
model is loaded. The model's processor (AutoProcessor) renders text and images; it must be a
real multimodal processor, not a bare tokenizer. LoRA ("all-linear") goes on the language model
only; the vision tower and projector stay frozen. On CPU this trains LLaVA-style models (CLIP
image processors have PIL fallbacks); Qwen2/2.5-VL processors need torchvision (GPU machines).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from rich.progress import Progress

from engine.config import StudioConfig
from engine.errors import StudioError
from engine.hashing import file_manifest, sha256_text
from engine.models.loading import is_vlm_model
from engine.registry import Registry, resolve_dataset
from engine.train import preflight
from engine.train.common import (ProgressCallback, common_args, device_setup, finish_training,
                                 load_model_for_training, lora_config, to_last_turn,
                                 trainer_callbacks)
from engine.train.data import Want, require_val
from engine.train.images import VisionData, dataset_features, load_vision_examples
from engine.train.run import TrainResult, base_model_row, tracked_run
from engine.workspace import Workspace

VLM_METHODS = ("sft", "dpo")
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_PROCESSOR_HINT = ("train vision-language models whose processor works without torchvision "
                   "(LLaVA-style, CLIP/SigLIP image processors) on CPU; Qwen2/2.5-VL processors "
                   "need torchvision, which only the GPU machine image has")


def load_processor(model_dir: Path, model_name: str) -> Any:
    """The model's multimodal processor; StudioError when only a tokenizer (or nothing) loads."""
    from transformers import AutoProcessor, ProcessorMixin

    try:
        processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    except (ImportError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StudioError(f"cannot load the model's processor ({exc.__class__.__name__})",
                          where=model_name, hint=_PROCESSOR_HINT) from None
    if not isinstance(processor, ProcessorMixin) or getattr(processor, "image_processor", None) is None:
        raise StudioError(f"the model has no image processor here (AutoProcessor gave only "
                          f"a {type(processor).__name__})", where=model_name, hint=_PROCESSOR_HINT)
    if not processor.chat_template:
        raise StudioError("the model has no chat template for image conversations", where=model_name,
                          hint="import a chat/instruct version of the model")
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def language_lora_targets(model: Any) -> str | None:
    """A peft regex matching every Linear layer of the language model (not vision tower or
    projector); None when the model does not expose its decoder."""
    import torch

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model:
        return None
    prefix = next((name for name, module in model.named_modules() if module is decoder), "")
    leaves = sorted({name.rsplit(".", 1)[-1] for name, module in decoder.named_modules()
                     if isinstance(module, torch.nn.Linear)})
    if not prefix or not leaves:
        return None
    return rf"{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, leaves))})"


def load_vision_data(cfg: StudioConfig, registry: Registry, want: Want) -> VisionData:
    """Validated rows from `train.data` (images beside it) or a refined dataset (text only)."""
    spec = cfg.train
    assert spec is not None
    if spec.datasets:
        raise StudioError("a train.datasets mixture is not available for image data",
                          where="train.datasets", hint="train on one train.data file or train.dataset")
    if spec.data:
        rows, info = load_vision_examples(cfg.resolve_path(spec.data), want, spec.data_format)
        require_val(spec, [])
        return VisionData(rows, [], info)
    if not spec.dataset:
        raise StudioError("no training data: set train.data (a JSONL with images) or train.dataset")
    row = resolve_dataset(registry, cfg.tenant, spec.dataset)
    root = Path(row["path"])
    train, _ = load_vision_examples(root / "train.jsonl", want, "auto")
    val_path = root / "val.jsonl"
    val = (load_vision_examples(val_path, want, "auto")[0]
           if val_path.is_file() and val_path.stat().st_size else [])
    require_val(spec, val)
    return VisionData(train, val, {"ref": f"{row['name']}@v{row['version']}", "sha256": row["sha256"],
                                   "files": file_manifest(root), "dataset": row, "images": 0})


def _image_token_error(exc: ValueError, spec: Any) -> StudioError | None:
    text = str(exc)
    if "image" in text.lower() and ("token" in text.lower() or "max_length" in text):
        return StudioError("an example with its image tokens is longer than train.max_seq_len",
                           where="train.max_seq_len",
                           hint=f"raise train.max_seq_len (now {spec.max_seq_len}) or shorten the "
                                "conversations; each image takes a fixed number of tokens")
    return None


def train_vlm(cfg: StudioConfig, ws: Workspace, registry: Registry, *,
              progress: Progress | None = None, run_id: str | None = None,
                force: bool = False) -> TrainResult:
    """Train one SFT or DPO run of a vision-language model; registered first, finished/failed at the end."""
    import torch  # noqa: F401  (imported before transformers on purpose: thread settings)
    from datasets import Dataset
    from transformers import set_seed

    spec = cfg.train
    assert spec is not None
    if spec.method not in VLM_METHODS:
        raise StudioError(f"method {spec.method!r} is not available for vision-language models",
                          where="train.method", hint="use sft or dpo with a vision-language base model")
    if spec.packing:
        raise StudioError("packing is not supported for image data", where="train.packing",
                          hint="set train.packing: false")
    model_row = base_model_row(cfg, registry)
    model_dir = Path(model_row["path"])
    if not is_vlm_model(model_dir):
        raise StudioError(f"base model {model_row['name']!r} is not a vision-language model",
                          where="train.base_model", hint="image data needs a model with a vision tower")
    want: Want = "sft" if spec.method == "sft" else "preference"
    data = load_vision_data(cfg, registry, want)  # every line and image checked before any model work
    use_cuda = device_setup(spec)
    set_seed(cfg.seed)
    processor = load_processor(model_dir, model_row["name"])

    # SFT loss: on every assistant turn when the template marks them ({% generation %}), else on
    # the last assistant turn (prompt/completion, which TRL masks itself) — as the text recipe does.
    columns: tuple[str, ...] = ("prompt", "chosen", "rejected")
    rows, val_rows = data.train, data.val
    assistant_only = False
    if spec.method == "sft":
        assistant_only = spec.assistant_only_loss and bool(_GENERATION_TAG.search(processor.chat_template))
        columns = ("messages",)
        if not assistant_only:
            columns = ("prompt", "completion")
            rows = [{**to_last_turn(r["messages"]), "images": r["images"]} for r in rows]
            val_rows = [{**to_last_turn(r["messages"]), "images": r["images"]} for r in val_rows]
    features = dataset_features(columns)
    train_ds = Dataset.from_list(rows, features=features)
    val_ds = Dataset.from_list(val_rows, features=features) if val_rows else None

    with tracked_run(cfg, ws, registry, base_model=model_row, data_info=data.info,
                     run_id=run_id) as run:
        model, peft_config = load_model_for_training(spec, model_dir, use_cuda,
                                                     auto_class="AutoModelForImageTextToText")
        lora_scope = "none"
        if peft_config is not None:
            lora_scope = "custom"
            if spec.lora.target_modules == "all-linear":
                targets = language_lora_targets(model)
                lora_scope = "language_model" if targets else "all-linear"
                peft_config = lora_config(spec.lora.model_copy(update={"target_modules": targets or "all-linear"}),
                                          use_dora=spec.adapter == "dora")
        base = common_args(cfg, run.path, use_cuda)
        if spec.method == "sft":
            from trl import SFTConfig, SFTTrainer

            args = SFTConfig(**base, max_length=spec.max_seq_len, assistant_only_loss=assistant_only,
                             packing=False)
            trainer = SFTTrainer(model=model, args=args, processing_class=processor,
                                 train_dataset=train_ds, eval_dataset=val_ds, peft_config=peft_config,
                                 callbacks=[ProgressCallback(progress, run.metrics_path)])
        else:
            from trl import DPOConfig, DPOTrainer

            pref = spec.preference
            extra = {"loss_type": [pref.loss_type]} if pref.loss_type else {}
            args = DPOConfig(**base, max_length=spec.max_seq_len, beta=pref.beta, **extra)
            trainer = DPOTrainer(model=model, args=args, processing_class=processor,
                                 train_dataset=train_ds, eval_dataset=val_ds, peft_config=peft_config,
                                 callbacks=[ProgressCallback(progress, run.metrics_path)])
        trainer_callbacks(trainer, spec, run.path)  # printer off, TensorBoard dir, early stopping
        try:
            est = preflight.before_training(trainer, spec, use_cuda, force, probe="step")
            t0 = time.monotonic()
            trainer.train(resume_from_checkpoint=run.resume_from)  # None: from the start
            if val_ds is not None:
                run.metrics["val_loss"] = round(float(trainer.evaluate()["eval_loss"]), 6)
        except ValueError as exc:
            friendly = _image_token_error(exc, spec)
            if friendly is None:
                raise
            raise friendly from None
        run.metrics["train_seconds"] = round(time.monotonic() - t0, 2)
        run.metrics["preflight"] = preflight.after_training(
            est, run.metrics["train_seconds"], trainer.state.global_step, use_cuda)
        run.metrics.update({
            "train_examples": len(rows), "images": data.info.get("images", 0),
            "modality": "vision", "adapter": spec.adapter, "lora_scope": lora_scope,
            "loss_mode": ("assistant_only" if assistant_only else "last_turn") if spec.method == "sft"
            else "preference",
        })
        finish_training(trainer, run, save_tokenizer=processor)
        run.metrics["chat_template_sha256"] = sha256_text(processor.chat_template or "")
    out = run.adapter_dir if run.adapter_dir.is_dir() else run.path / "model"
    return TrainResult(run.run_id, run.path, out, run.metrics)
