"""Shared TRL plumbing of the recipes: model/adapter loading, TRL arguments, progress, saving the weights.

The run directory itself (registration, manifest, TrainResult) is engine/train/run.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import Progress
from transformers import TrainerCallback

from engine import gpu_libs
from engine.config import TRL_ARGUMENTS, LoraSpec
from engine.errors import StudioError
from engine.hashing import sha256_file
from engine.models.loading import safe_load_kwargs
from engine.train.plot import write_loss_plot
from engine.train.ranks import local_world_size, record_rank_state
from engine.train.resume import MARKER
from engine.train.run import RunHandle

if TYPE_CHECKING:
    from engine.config import StudioConfig


def lora_config(spec: LoraSpec, use_dora: bool = False, task_type: str = "CAUSAL_LM") -> Any:
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=spec.target_modules, task_type=task_type, use_dora=use_dora)


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
        self._last_tokens: tuple[float, float] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t0 = time.monotonic()
        if state.global_step == 0 and (self.metrics_path.parent / MARKER).is_file():
            raise StudioError("this training method cannot be resumed yet (its recipe does not "
                              "pass run.resume_from to trainer.train)",
                              hint="start a new run with `studio train CONFIG`")
        if self.progress is not None:
            self.task = self.progress.add_task("train", total=state.max_steps,
                                               completed=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:  # one writer with several processes
            return
        elapsed = time.monotonic() - self.t0
        row = {"step": state.global_step, "epoch": state.epoch, "elapsed_s": round(elapsed, 3), **logs}
        tokens = logs.get("num_tokens")  # cumulative (all processes), logged by TRL's trainers
        if tokens is not None and self._last_tokens is not None and elapsed > self._last_tokens[0]:
            row["tokens_per_s"] = round((tokens - self._last_tokens[1]) / (elapsed - self._last_tokens[0]), 1)
        if tokens is not None:
            self._last_tokens = (elapsed, tokens)
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.progress is not None and self.task is not None and "loss" in logs:
            self.progress.update(self.task, description=f"train loss {logs['loss']:.3f}")


# ---------------------------------------------------------------------------------- model load
def device_setup(spec: Any) -> bool:
    """Threads for CPU torch; returns True when training on CUDA."""
    import torch

    # processes on one machine share its cores
    torch.set_num_threads(spec.threads or max(1, (os.cpu_count() or 1) // local_world_size()))
    return bool(torch.cuda.is_available())


def load_model_for_training(spec: Any, model_dir: Path, use_cuda: bool, *,
                            auto_class: str = "AutoModelForCausalLM",
                            num_labels: int | None = None) -> tuple[Any, Any]:
    """(model, peft_config or None) for spec.adapter: lora, dora, qlora (4/8-bit base) or full."""
    import torch
    import transformers

    kwargs: dict[str, Any] = {"local_files_only": True,
                              "dtype": torch.bfloat16 if use_cuda else torch.float32}
    kwargs.update(safe_load_kwargs(model_dir))  # safetensors only; remote code only if allow-listed
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    if spec.adapter == "qlora":
        try:
            gpu_libs.require("bitsandbytes")  # the CLI hides it from jobs that do not ask for it
        except ImportError:
            raise StudioError("adapter 'qlora' needs the bitsandbytes package",
                              hint="pip install 'expert-studio[gpu]' (bitsandbytes>=0.50.2)") from None
        from transformers import BitsAndBytesConfig

        q = spec.quant
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                               bnb_4bit_use_double_quant=q.double_quant,
                               bnb_4bit_compute_dtype=kwargs["dtype"])
            if q.bits == 4 else BitsAndBytesConfig(load_in_8bit=True))
        if use_cuda:  # bitsandbytes quantizes while placing the weights on the GPU
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = getattr(transformers, auto_class).from_pretrained(model_dir, **kwargs)
    if spec.adapter == "full":
        return model, None
    if spec.adapter == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    task = "SEQ_CLS" if num_labels is not None else "CAUSAL_LM"
    return model, lora_config(spec.lora, use_dora=spec.adapter == "dora", task_type=task)


def common_args(cfg: StudioConfig, run_dir: Path, use_cuda: bool) -> dict[str, Any]:
    """TrainingArguments shared by every TRL config class (SFTConfig, DPOConfig, …)."""
    spec = cfg.train
    to = TRL_ARGUMENTS  # train key -> TRL argument name(s), engine/config/train.py
    args: dict[str, Any] = dict(output_dir=str(run_dir / "checkpoints"),
                                use_cpu=not use_cuda, bf16=use_cuda, fp16=False)
    for key in ("batch_size", "grad_accum", "epochs", "max_steps", "learning_rate", "lr_scheduler",
                "warmup_ratio", "weight_decay"):  # the value passed on as it is
        args.update(dict.fromkeys(to[key], getattr(spec, key)))
    args.update(activation_checkpointing=False,  # (was gradient_checkpointing) off: small models
                logging_steps=1, logging_strategy="steps")
    strategy, steps = to["save_steps"]
    args.update({strategy: "steps" if spec.save_steps else "epoch", steps: spec.save_steps or 500},
                save_total_limit=2, eval_strategy="no", report_to="none", disable_tqdm=True)
    args.update(dict.fromkeys(to["seed"], cfg.seed), dataloader_num_workers=0)
    return args


def finish_training(trainer: Any, handle: RunHandle, save_tokenizer: Any = None) -> None:
    """Save the adapter (or the full model) and record the usual metrics into handle.metrics.

    With several processes every rank records its weight hash (ranks/rank<k>.json) and only the
    process that should save writes the weights.
    """
    ranks = record_rank_state(trainer, handle.path)
    if ranks is not None:
        handle.metrics["distributed"] = ranks
        if ranks.get("in_sync") is False:
            raise RuntimeError("training processes ended with different weights")
    # sharded weights (FSDP, ZeRO-3) are gathered by every rank together, for rank 0 to write
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if ranks and ranks["sharded"] else None
    if not trainer.args.should_save:
        return
    out = handle.adapter_dir if _is_peft(trainer.model) else handle.path / "model"
    trainer.model.save_pretrained(out, state_dict=state_dict)
    if save_tokenizer is not None:
        save_tokenizer.save_pretrained(out)
    history = trainer.state.log_history
    handle.metrics.update({
        "steps": trainer.state.global_step,
        "train_loss": last_logged(history, "train_loss"),
        "final_loss": last_logged(history, "loss"),
    })
    write_loss_plot(handle.path)
    weights = out / ("adapter_model.safetensors" if out == handle.adapter_dir else "model.safetensors")
    if weights.is_file():
        handle.metrics["adapter_sha256" if out == handle.adapter_dir else "model_sha256"] = sha256_file(weights)


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def last_logged(history: list[dict[str, Any]], key: str) -> float | None:
    for row in reversed(history):
        if key in row:
            return round(float(row[key]), 6)
    return None
