"""LoRA SFT recipe on TRL's SFTTrainer + PEFT, readable top to bottom.

Reads a dataset version (train/val splits of `messages` records) and a base model from the store,
trains a LoRA adapter with loss on assistant tokens only (see templates.py), and writes the run
directory: config.yaml, metrics.jsonl, checkpoints/, adapter/ and manifest.json.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.progress import Progress

from engine.config import StudioConfig, TrainSpec
from engine.errors import StudioError
from engine.hashing import file_manifest, sha256_file, sha256_json, sha256_text
from engine.registry import Registry
from engine.repro.manifest import environment_section
from engine.train.common import (ProgressCallback, lora_config, new_run_id, read_conversations,
                                 to_last_turn)
from engine.train.templates import plan_template
from engine.workspace import Workspace


@dataclass
class TrainResult:
    run_id: str
    path: Path
    adapter_dir: Path
    metrics: dict[str, Any]


def train_sft(cfg: StudioConfig, ws: Workspace, registry: Registry, *, base_model: str,
              dataset: dict[str, Any], progress: Progress | None = None,
              run_id: str | None = None) -> TrainResult:
    """Train one LoRA SFT run; the run is registered first and marked finished/failed at the end."""
    spec: TrainSpec = cfg.train  # type: ignore[assignment]
    model_row = registry.get_model(base_model)
    if model_row is None:
        raise StudioError(f"unknown base model {base_model!r}", hint="see `studio models list`")
    run_id = run_id or new_run_id()
    run_dir = ws.run_dir(cfg.tenant, run_id)
    run_dir.mkdir(parents=True, mode=0o700)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    dataset_ref = f"{dataset['name']}@v{dataset['version']}"
    registry.put_run(run_id, cfg.tenant, spec.method, base_model, dataset_ref, run_dir)
    try:
        metrics = _train(cfg, spec, Path(model_row["path"]), Path(dataset["path"]), run_dir,
                         progress)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        registry.finish_run(run_id, status, {"error": exc.__class__.__name__})
        raise
    manifest = {
        "run_id": run_id,
        "tenant": cfg.tenant,
        "method": spec.method,
        "config": cfg.model_dump(mode="json"),
        "config_sha256": sha256_json(cfg.model_dump(mode="json")),
        "seed": cfg.seed,
        "dataset": {"ref": dataset_ref, "sha256": dataset["sha256"],
                    "files": file_manifest(Path(dataset["path"]))},
        "base_model": {"name": base_model, "manifest_sha256": model_row["manifest_sha256"],
                       "source_sha256": model_row["source_sha256"]},
        "adapter": file_manifest(run_dir / "adapter"),
        "metrics": metrics,
        **environment_section(),
    }
    (run_dir / "manifest.json").write_text(
        __import__("json").dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    registry.finish_run(run_id, "succeeded", metrics)
    return TrainResult(run_id, run_dir, run_dir / "adapter", metrics)


def _train(cfg: StudioConfig, spec: TrainSpec, model_dir: Path, data_dir: Path, run_dir: Path,
           progress: Progress | None) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(spec.threads or os.cpu_count() or 1)
    set_seed(cfg.seed)
    train_convs = read_conversations(data_dir / "train.jsonl")
    val_convs = read_conversations(data_dir / "val.jsonl")
    if not train_convs:
        raise StudioError("the dataset's train split is empty", where=str(data_dir),
                          hint="refine more raw data or lower split fractions")

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    serving_template = tokenizer.chat_template
    plan = plan_template(tokenizer, train_convs)
    assistant_only = spec.assistant_only_loss and plan.mode == "assistant_only"
    if assistant_only:
        tokenizer.chat_template = plan.template
        rows = [{"messages": m} for m in train_convs]
        val_rows = [{"messages": m} for m in val_convs]
    else:  # prompt/completion: TRL masks the prompt and renders through the serving template
        rows = [to_last_turn(m) for m in train_convs]
        val_rows = [to_last_turn(m) for m in val_convs]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    use_cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                 dtype=torch.bfloat16 if use_cuda else torch.float32)
    args = SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        use_cpu=not use_cuda, bf16=use_cuda, fp16=False,
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum,
        num_train_epochs=spec.epochs, max_steps=spec.max_steps,
        learning_rate=spec.learning_rate, lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=spec.warmup_ratio, weight_decay=spec.weight_decay,
        max_length=spec.max_seq_len,
        assistant_only_loss=assistant_only,
        activation_checkpointing=False,  # (was gradient_checkpointing) off: small models
        logging_steps=1, logging_strategy="steps",
        save_strategy="steps" if spec.save_steps else "epoch",
        save_steps=spec.save_steps or 500, save_total_limit=2, save_only_model=False,
        eval_strategy="no",
        report_to="none", disable_tqdm=True,
        seed=cfg.seed, data_seed=cfg.seed,
        dataloader_num_workers=0,
    )
    metrics_path = run_dir / "metrics.jsonl"
    trainer = SFTTrainer(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
        peft_config=lora_config(spec.lora),
        callbacks=[ProgressCallback(progress, metrics_path)],
    )
    trainer.remove_callback(PrinterCallback)  # logs go to metrics.jsonl and the progress bar
    t0 = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - t0
    metrics: dict[str, Any] = {
        "train_seconds": round(train_seconds, 2),
        "steps": trainer.state.global_step,
        "train_loss": _last(trainer.state.log_history, "train_loss"),
        "final_loss": _last(trainer.state.log_history, "loss"),
        "train_examples": len(rows),
        "loss_mode": "assistant_only" if assistant_only else "last_turn",
        "template_note": plan.reason,
    }
    if val_rows:
        metrics["val_loss"] = round(float(trainer.evaluate()["eval_loss"]), 6)
    adapter_dir = run_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    tokenizer.chat_template = serving_template  # ship the serving template with the adapter
    tokenizer.save_pretrained(adapter_dir)
    metrics["chat_template_sha256"] = sha256_text(serving_template or "")
    metrics["adapter_sha256"] = sha256_file(adapter_dir / "adapter_model.safetensors")
    return metrics


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    for row in reversed(history):
        if key in row:
            return round(float(row[key]), 6)
    return None
