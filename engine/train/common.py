"""Shared training plumbing: run ids, PEFT config, dataset loading, progress/metrics callback."""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.progress import Progress
from transformers import TrainerCallback

from engine.config import LoraSpec
from engine.errors import DataError


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def lora_config(spec: LoraSpec, use_dora: bool = False) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=spec.target_modules, task_type="CAUSAL_LM", use_dora=use_dora)


def read_conversations(path: Path) -> list[list[dict[str, str]]]:
    """The `messages` of every record of a dataset split file."""
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                out.append(json.loads(line)["messages"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"line {lineno}: not a dataset record with 'messages'",
                                where=str(path), hint="re-create the dataset with `studio refine`") from None
    return out


def to_last_turn(messages: list[dict[str, str]]) -> dict[str, Any]:
    """prompt/completion form: everything before the final assistant turn is the prompt."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {"prompt": messages[:last], "completion": [messages[last]]}


class ProgressCallback(TrainerCallback):
    """Drives a rich progress bar (with ETA) and appends every log to metrics.jsonl."""

    def __init__(self, progress: Progress | None, metrics_path: Path):
        self.progress = progress
        self.metrics_path = metrics_path
        self.task: Any = None
        self.t0 = time.monotonic()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t0 = time.monotonic()
        if self.progress is not None:
            self.task = self.progress.add_task("train", total=state.max_steps,
                                               completed=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kw: Any) -> None:
        if not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch,
               "elapsed_s": round(time.monotonic() - self.t0, 3), **logs}
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.progress is not None and self.task is not None and "loss" in logs:
            self.progress.update(self.task, description=f"train loss {logs['loss']:.3f}")
