"""Shared training plumbing: run dirs and manifests, model/adapter loading, TRL arguments, progress."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from rich.progress import Progress
from transformers import TrainerCallback

from engine.config import TRL_ARGUMENTS, LoraSpec
from engine.errors import StudioError
from engine.models.loading import safe_load_kwargs


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


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
        from engine.train.resume import MARKER

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


# ------------------------------------------------------------------------------------ run dirs
@dataclass
class RunHandle:
    """A registered run in progress: recipes fill `metrics` and write into `adapter_dir`."""

    run_id: str
    path: Path
    metrics: dict[str, Any]
    resume_from: str | None = None  # checkpoint for trainer.train(resume_from_checkpoint=…), see resume.py

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"


@contextmanager
def tracked_run(cfg: Any, ws: Any, registry: Any, *, base_model: dict[str, Any],
                data_info: dict[str, Any], run_id: str | None = None) -> Iterator[RunHandle]:
    """Create, register and finish a run directory around a recipe's training code.

    On success: manifest.json (config, data and base-model hashes, output hashes, metrics,
    environment) and status 'succeeded'. On an exception: status 'failed' or 'interrupted'
    (Ctrl-C), no manifest, and the exception propagates. A run dir with a resume marker
    (`studio train --resume`) is continued instead of created (engine/train/resume.py). With
    several processes only rank 0 touches the registry, the run dir files and the manifest.
    """
    from engine.hashing import file_manifest, sha256_json
    from engine.repro.manifest import environment_section, run_sections
    from engine.train import resume
    from engine.train.distributed import is_main_process, world_size

    spec = cfg.train
    run_id = run_id or new_run_id()
    run_dir = ws.run_dir(cfg.tenant, run_id)
    main = is_main_process()
    resolved = cfg.model_dump(mode="json")
    checkpoint = resume.pending_checkpoint(run_dir)
    handle = RunHandle(run_id, run_dir, {}, resume_from=str(checkpoint) if checkpoint else None)
    if checkpoint is not None:
        resume.check_inputs(run_dir, data_info, base_model)
    elif main:
        run_dir.mkdir(parents=True, mode=0o700, exist_ok=world_size() > 1)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
        resume.record_inputs(run_dir, data_info, base_model, world_size())
        registry.put_run(run_id, cfg.tenant, spec.method, base_model["name"], data_info["ref"], run_dir,
                         parent_run=base_model.get("parent_run"))
    with resume.run_lock(run_dir) if main else nullcontext():  # dies with the process (SIGKILL too)
        if checkpoint is not None and main:
            handle.metrics["resumed_from_step"] = resume.reopen(registry, run_id, run_dir, checkpoint)
        try:
            yield handle
        except BaseException as exc:
            if main:
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                registry.finish_run(run_id, status, {"error": exc.__class__.__name__})
            raise
        if not main:
            return
        outputs = handle.adapter_dir if handle.adapter_dir.is_dir() else run_dir / "model"
        manifest = {
            "run_id": run_id, "tenant": cfg.tenant, "method": spec.method, "adapter": spec.adapter,
            "config": resolved, "config_sha256": sha256_json(resolved), "seed": cfg.seed,
            "dataset": {k: v for k, v in data_info.items() if k != "dataset"},
            "base_model": {"name": base_model["name"], "manifest_sha256": base_model["manifest_sha256"],
                           "source_sha256": base_model["source_sha256"],
                           "parent_run": base_model.get("parent_run")},
            "outputs": {"dir": outputs.name, "files": file_manifest(outputs) if outputs.is_dir() else {}},
            "metrics": handle.metrics,
            **environment_section(),
            **run_sections(cfg, run_dir, outputs, base_model),  # engine/repro/manifest.py
        }
        (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True),
                                               encoding="utf-8")
        resume.clear_marker(run_dir)
        registry.finish_run(run_id, "succeeded", handle.metrics)


# ---------------------------------------------------------------------------------- model load
def device_setup(spec: Any) -> bool:
    """Threads for CPU torch; returns True when training on CUDA."""
    import os

    import torch

    from engine.train.distributed import local_world_size

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
            import bitsandbytes  # noqa: F401
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


def common_args(cfg: Any, run_dir: Path, use_cuda: bool) -> dict[str, Any]:
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
    from engine.hashing import sha256_file
    from engine.train.distributed import record_rank_state

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
    from engine.train.plot import write_loss_plot

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
