"""Reward-model recipe on TRL's RewardTrainer: a scalar scorer trained on chosen/rejected pairs.

The base model gets a one-output classification head (AutoModelForSequenceClassification,
num_labels=1) and learns to score the chosen reply above the rejected one (Bradley-Terry loss).
With LoRA/DoRA/QLoRA the adapter also carries the new head (PEFT's SEQ_CLS task saves it);
with `adapter: full` the whole model is saved. Pairs are rendered with the tokenizer's own chat
template. Writes the run directory like sft.py: config.yaml, metrics.jsonl, checkpoints/,
adapter/ (or model/) and manifest.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import Progress

from engine.config import StudioConfig
from engine.errors import StudioError
from engine.hashing import sha256_text
from engine.registry import Registry
from engine.train import preflight
from engine.train.common import (ProgressCallback, common_args, device_setup, finish_training,
                                 load_model_for_training, trainer_callbacks)
from engine.train.data import load_training_data
from engine.train.run import TrainResult, base_model_row, tracked_run
from engine.workspace import Workspace


def train_reward(cfg: StudioConfig, ws: Workspace, registry: Registry, *,
                 progress: Progress | None = None, run_id: str | None = None,
                force: bool = False) -> TrainResult:
    """Train one reward model; the run is registered first and marked finished/failed at the end."""
    import torch  # noqa: F401  (imported before transformers on purpose: thread settings)
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    spec = cfg.train
    assert spec is not None
    model_row = base_model_row(cfg, registry)
    data = load_training_data(spec, registry, cfg.tenant, "preference", cfg.resolve_path, seed=cfg.seed)
    model_dir = Path(model_row["path"])
    use_cuda = device_setup(spec)
    set_seed(cfg.seed)

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if not tokenizer.chat_template:
        raise StudioError(f"base model {model_row['name']!r} has no chat template",
                          hint="preference data is conversational; import a chat (instruct) model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows, val_rows = data.train, data.val
    if not any(n <= spec.max_seq_len for n in _pair_lengths(rows, tokenizer)):
        raise StudioError(f"every pair is longer than train.max_seq_len ({spec.max_seq_len} tokens)",
                          where="train.max_seq_len", hint="raise max_seq_len")

    with tracked_run(cfg, ws, registry, base_model=model_row, data_info=data.info,
                     run_id=run_id) as run:
        model, peft_config = load_model_for_training(
            spec, model_dir, use_cuda, auto_class="AutoModelForSequenceClassification", num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id  # the head scores the last non-pad token
        args = RewardConfig(**common_args(cfg, run.path, use_cuda), max_length=spec.max_seq_len)
        trainer = RewardTrainer(
            model=model, args=args, processing_class=tokenizer,
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
            peft_config=peft_config,
            callbacks=[ProgressCallback(progress, run.metrics_path)],
        )
        kept = len(trainer.train_dataset)  # RewardTrainer drops pairs longer than max_length: count them
        trainer_callbacks(trainer, spec, run.path)  # printer off, TensorBoard dir, early stopping
        est = preflight.before_training(trainer, spec, use_cuda, force, probe="step")
        t0 = time.monotonic()
        trainer.train(resume_from_checkpoint=run.resume_from)  # None: from the start
        run.metrics["train_seconds"] = round(time.monotonic() - t0, 2)
        run.metrics["preflight"] = preflight.after_training(
            est, run.metrics["train_seconds"], trainer.state.global_step, use_cuda)
        run.metrics.update({"train_examples": kept, "dropped_too_long": len(rows) - kept,
                            "adapter": spec.adapter})
        if val_rows:
            result = trainer.evaluate()
            run.metrics["val_loss"] = round(float(result["eval_loss"]), 6)
            if "eval_accuracy" in result:
                run.metrics["val_accuracy"] = round(float(result["eval_accuracy"]), 6)
        finish_training(trainer, run, save_tokenizer=tokenizer)
        run.metrics["chat_template_sha256"] = sha256_text(tokenizer.chat_template or "")
    out = run.adapter_dir if run.adapter_dir.is_dir() else run.path / "model"
    return TrainResult(run.run_id, run.path, out, run.metrics)


def _pair_lengths(rows: list[dict[str, Any]], tokenizer: Any) -> list[int]:
    """Tokens of the longer side (prompt + chosen or prompt + rejected) of every pair, as rendered."""
    texts = [tokenizer.apply_chat_template(r["prompt"] + r[side], tokenize=False)
             for r in rows for side in ("chosen", "rejected")]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [max(len(a), len(b)) for a, b in zip(ids[::2], ids[1::2])]
