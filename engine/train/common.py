"""Shared TRL plumbing of the recipes: model/adapter loading, TRL arguments, progress, saving the weights.

`check_device_knobs` refuses, before any weights load, GPU knobs this machine cannot run
(flash-attention or a bitsandbytes optimizer without CUDA or without the package, TensorBoard
logging without tensorboard); `trainer_callbacks` puts the callbacks' knobs (TensorBoard's log
directory inside the run, early stopping) on a constructed trainer.

The run directory itself (registration, manifest, TrainResult) is engine/train/run.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import Progress
from transformers import EarlyStoppingCallback, PrinterCallback, TrainerCallback
from transformers.integrations import TensorBoardCallback, is_tensorboard_available

from engine import gpu_libs
from engine.config import TRL_ARGUMENTS, LoraSpec
from engine.config.train import BNB_OPTIMIZERS
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
    use_cuda = bool(torch.cuda.is_available())
    check_device_knobs(spec, use_cuda)
    return use_cuda


def check_device_knobs(spec: Any, use_cuda: bool) -> None:
    """Refuse the GPU knobs this machine cannot run, naming the key, before any weights load.
    The optional packages are imported only here, for the run that asks for them (gpu_libs)."""
    if spec.attn_implementation == "flash_attention_2":
        _require_cuda_package("flash_attention_2", "flash_attn", use_cuda,
                              where="train.attn_implementation",
                              hint="use sdpa (or leave the key unset) instead",
                              install="pip install flash-attn --no-build-isolation")
    if spec.optimizer in BNB_OPTIMIZERS:
        _require_cuda_package(f"optimizer {spec.optimizer}", "bitsandbytes", use_cuda,
                              where="train.optimizer", kind=" is a bitsandbytes optimizer and",
                              hint="use adamw_torch_fused (or leave the key unset) instead",
                              install="pip install 'expert-studio[gpu]'")
    if spec.logging == "tensorboard" and not is_tensorboard_available():
        raise StudioError("logging: tensorboard needs the tensorboard package, which is not "
                          "installed", where="train.logging",
                          hint="pip install tensorboard, or set logging: none")


def _require_cuda_package(what: str, package: str, use_cuda: bool, *, where: str, hint: str,
                          install: str, kind: str = "") -> None:
    """A GPU-only setting: refused without CUDA, or without its package (imported only here)."""
    if not use_cuda:
        raise StudioError(f"{what}{kind} needs a CUDA GPU, and this machine has none",
                          where=where, hint=hint)
    try:
        gpu_libs.require(package)
    except ImportError:
        raise StudioError(f"{what} needs the {package} package, which is not installed",
                          where=where, hint=f"{install}, or {hint}") from None


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
    if spec.attn_implementation is not None:  # none: transformers picks (sdpa where it can)
        kwargs.update(dict.fromkeys(TRL_ARGUMENTS["attn_implementation"], spec.attn_implementation))
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

        # checkpointing (train.gradient_checkpointing) is switched on by the Trainer, and the TRL
        # trainers make a PEFT model's inputs require grads for it (enable_input_require_grads)
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
                "warmup_ratio", "weight_decay", "max_grad_norm"):  # the value passed on as it is
        args.update(dict.fromkeys(to[key], getattr(spec, key)))
    checkpointing, checkpointing_kwargs = to["gradient_checkpointing"]
    args.update({checkpointing: spec.gradient_checkpointing,  # transformers 5: was gradient_checkpointing
                 checkpointing_kwargs: {"use_reentrant": False} if spec.gradient_checkpointing else None},
                logging_steps=1, logging_strategy="steps")
    if spec.optimizer is not None:
        args.update(dict.fromkeys(to["optimizer"], spec.optimizer))
    strategy, steps = to["save_steps"]
    if spec.save_steps is None and spec.load_best_model_at_end:  # a checkpoint at every evaluation
        args.update({strategy: "steps", steps: spec.eval_steps})
    else:
        args.update({strategy: "steps" if spec.save_steps else "epoch", steps: spec.save_steps or 500})
    strategy, steps = to["eval_steps"]
    args.update({strategy: "steps" if spec.eval_steps else "no", steps: spec.eval_steps})
    best, metric, greater = to["load_best_model_at_end"]
    args.update({best: spec.load_best_model_at_end, metric: "eval_loss" if spec.load_best_model_at_end
                 else None, greater: False if spec.load_best_model_at_end else None})
    args.update(dict.fromkeys(to["logging"], "tensorboard" if spec.logging == "tensorboard" else "none"),
                save_total_limit=2, disable_tqdm=True)
    args.update(dict.fromkeys(to["seed"], cfg.seed), dataloader_num_workers=0)
    return args


TENSORBOARD_DIR = "tensorboard"  # <run>/tensorboard/: the event files of `logging: tensorboard`


def trainer_callbacks(trainer: Any, spec: Any, run_dir: Path) -> None:
    """The knobs that live on callbacks, set on a constructed trainer: no console printer (logs go
    to metrics.jsonl and the progress bar), TensorBoard's event files inside the run directory
    (transformers would put them under checkpoints/runs/), early stopping."""
    trainer.remove_callback(PrinterCallback)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(run_dir / TENSORBOARD_DIR)
    if spec.early_stopping is not None:
        patience, threshold = (TRL_ARGUMENTS[f"early_stopping.{k}"][0] for k in ("patience", "threshold"))
        trainer.add_callback(EarlyStoppingCallback(**{patience: spec.early_stopping.patience,
                                                      threshold: spec.early_stopping.threshold}))


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
