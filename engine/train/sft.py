"""SFT recipe on TRL's SFTTrainer: LoRA, DoRA, QLoRA or full fine-tuning, readable top to bottom.

Reads `messages` conversations (a refined dataset version or a JSONL file in any accepted format,
see data.py), trains with loss on assistant tokens only (see templates.py), optionally with
padding-free packing, and writes the run directory: config.yaml, metrics.jsonl, checkpoints/,
adapter/ (or model/ for full fine-tuning) and manifest.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.progress import Progress

from engine.config import StudioConfig
from engine.hashing import sha256_text
from engine.registry import Registry
from engine.train import preflight, row_packing
from engine.train.common import (ProgressCallback, common_args, device_setup, finish_training,
                                 load_model_for_training, to_last_turn, trainer_callbacks)
from engine.train.data import load_training_data
from engine.train.labelled_loss import labelled_positions_only
from engine.train.mask_gate import check_gate, mask_report
from engine.train.row_packing import RowPackedSFTTrainer
from engine.train.run import TrainResult, base_model_row, tracked_run
from engine.train.templates import plan_template
from engine.workspace import Workspace


def train_sft(cfg: StudioConfig, ws: Workspace, registry: Registry, *,
              progress: Progress | None = None, run_id: str | None = None,
              force: bool = False) -> TrainResult:
    """Train one SFT run; the run is registered first and marked finished/failed at the end."""
    import torch  # noqa: F401  (imported before transformers on purpose: thread settings)
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    spec = cfg.train
    assert spec is not None
    model_row = base_model_row(cfg, registry)
    data = load_training_data(spec, registry, cfg.tenant, "sft", cfg.resolve_path, seed=cfg.seed)
    model_dir = Path(model_row["path"])
    use_cuda = device_setup(spec)
    set_seed(cfg.seed)

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    serving_template = tokenizer.chat_template
    convs = [r["messages"] for r in data.train]
    plan = plan_template(tokenizer, convs, override=spec.chat_template, resolve_path=cfg.resolve_path)
    assistant_only = spec.assistant_only_loss and plan.mode == "assistant_only"
    mask = None
    if assistant_only:
        mask = mask_report(tokenizer, plan.template, serving_template, convs)
        check_gate(mask, where="train.chat_template" if spec.chat_template else None)  # before any weights load
        tokenizer.chat_template = plan.template
        rows, val_rows = data.train, data.val
    else:  # prompt/completion: TRL masks the prompt and renders through the serving template
        rows = [to_last_turn(r["messages"]) for r in data.train]
        val_rows = [to_last_turn(r["messages"]) for r in data.val]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    with tracked_run(cfg, ws, registry, base_model=model_row, data_info=data.info,
                     run_id=run_id) as run:
        model, peft_config = load_model_for_training(spec, model_dir, use_cuda)
        args = SFTConfig(**common_args(cfg, run.path, use_cuda), max_length=spec.max_seq_len,
                         assistant_only_loss=assistant_only, packing=spec.packing)
        trainer_cls = RowPackedSFTTrainer if spec.packing else SFTTrainer
        trainer = trainer_cls(
            model=model, args=args, processing_class=tokenizer,
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
            peft_config=peft_config,
            callbacks=[ProgressCallback(progress, run.metrics_path)],
        )
        trainer_callbacks(trainer, spec, run.path)  # printer off, TensorBoard dir, early stopping
        if spec.packing:
            row_packing.install(trainer)  # B packed rows instead of one flattened row (no flash-attn)
        longest = max(len(ids) for ids in trainer.train_dataset["input_ids"])
        est = preflight.before_training(trainer, spec, use_cuda, force, longest_tokens=longest)
        t0 = time.monotonic()
        with labelled_positions_only() as compact:  # CPU: project only positions that carry loss
            trainer.train(resume_from_checkpoint=run.resume_from)  # None: from the start
        run.metrics["train_seconds"] = round(time.monotonic() - t0, 2)
        run.metrics["loss_positions"] = "labelled" if compact or use_cuda else "all"

        run.metrics["preflight"] = preflight.after_training(
            est, run.metrics["train_seconds"], trainer.state.global_step, use_cuda)
        run.metrics.update({"train_examples": len(rows),
                            "loss_mode": "assistant_only" if assistant_only else "last_turn",
                            "template_note": plan.reason, "chat_family": plan.family,
                            "adapter": spec.adapter,
                            "packing": spec.packing,
                            "loss_token_share": mask["loss_token_share"] if mask else None})
        if val_rows:
            with labelled_positions_only():
                run.metrics["val_loss"] = round(float(trainer.evaluate()["eval_loss"]), 6)
        tokenizer.chat_template = serving_template  # ship the serving template with the weights
        finish_training(trainer, run, save_tokenizer=tokenizer)
        run.metrics["chat_template_sha256"] = sha256_text(serving_template or "")
    out = run.adapter_dir if run.adapter_dir.is_dir() else run.path / "model"
    return TrainResult(run.run_id, run.path, out, run.metrics)
