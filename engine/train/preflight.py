"""Preflight: estimate peak memory and time before training starts, and refuse what cannot fit.

Static part (exact, from the instantiated model): weights, trainable parameters, their gradients
and AdamW state; the baseline is what the process already holds (CPU: resident set; CUDA: the
allocator's bytes). Measured part (a short probe on the real data): one forward+backward pass on a
worst-case batch (batch_size x the longest example, capped at max_seq_len) gives the activation
peak, one on the first real batch gives the time per step. After the run, `compare` reports how
far off the estimate was. On CPU the peak is the process's resident-set high-water mark (reset
through /proc/self/clear_refs), on CUDA the allocator's peak.

The probe runs the model as the trainer will (train.gradient_checkpointing is switched on when the
trainer is built, the attention kernel when the model is loaded), so what it measures already
reflects both. Next to it, `activation_model_bytes` computes the activation memory from the
model's shape, the batch, the checkpointing and the attention kernel (the estimate's
`activations_model_gb`): without a probe (GRPO) it is the activation term, and it says before any
measurement how much checkpointing or a fused attention kernel saves.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from engine.console import err
from engine.errors import StudioError

GB = 1024**3


@dataclass
class Estimate:
    device: str
    device_memory_gb: float
    weights_gb: float
    trainable_params: int
    total_params: int
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    peak_gb: float
    activations_model_gb: float
    gradient_checkpointing: bool
    attn_implementation: str
    seconds_per_step: float
    steps: int
    seconds_total: float
    steps_per_epoch: int
    seconds_per_epoch: float
    probe: str

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def line(self) -> str:
        return (f"preflight: peak ≈ {self.peak_gb:.2f} GiB of {self.device_memory_gb:.1f} GiB "
                f"({self.device}; weights {self.weights_gb:.2f}, optimizer {self.optimizer_gb:.2f}, "
                f"activations {self.activations_gb:.2f}, modelled {self.activations_model_gb:.2f} with "
                f"{self.attn_implementation} attention{', checkpointed' if self.gradient_checkpointing else ''}); {self.trainable_params:,} trainable of "
                f"{self.total_params:,} params; "
                + (f"≈ {self.seconds_per_step:.2f} s/step × {self.steps} steps ≈ "
                   f"{self.seconds_total / 60:.1f} min ({self.seconds_per_epoch / 60:.1f} min/epoch)"
                   if self.probe != "none" else "time not estimated (no probe for this method)"))


# ------------------------------------------------------------------------------------- memory
def rss_peak_bytes() -> int:
    """This process's resident-set high-water mark (Linux VmHWM), in bytes; 0 where unknown."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_rss_peak() -> bool:
    """Reset the high-water mark to the current resident set (/proc/self/clear_refs); False where
    the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def device_memory(use_cuda: bool) -> tuple[str, float]:
    if use_cuda:
        import torch

        free, total = torch.cuda.mem_get_info()
        return torch.cuda.get_device_name(), total / GB
    avail = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return "cpu", (avail + _current_rss()) / GB


def _current_rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# --------------------------------------------------------------------------- activation model
def activation_model_bytes(config: Any, batch: int, seq: int, *, checkpointing: bool,
                           attn_implementation: str | None, bytes_per_value: int = 4) -> int:
    """Activations a decoder keeps for the backward pass (after Korthikanti et al., 2022, for a
    Llama-style block), in bytes. Per layer: the tensors the norms, q/k/v/o projections and the
    gated MLP save, ≈ batch·seq·(8·hidden + 4·intermediate) values; `eager` attention also keeps
    the seq×seq score and probability matrices of every head (2·heads·seq²·batch), which `sdpa`
    and `flash_attention_2` never materialise. With checkpointing only each layer's input is kept
    (batch·seq·hidden per layer) plus one layer's full set, recomputed during its backward. The
    logits (and their gradient) in float32 come on top either way."""
    text = getattr(config, "text_config", None) or config
    hidden = int(text.hidden_size)
    layers = int(text.num_hidden_layers)
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    inter = int(getattr(text, "intermediate_size", None) or 4 * hidden)
    vocab = int(getattr(text, "vocab_size", 0) or 0)
    tokens = batch * seq
    per_layer = tokens * (8 * hidden + 4 * inter)
    if (attn_implementation or "sdpa") == "eager":
        per_layer += 2 * heads * seq * seq * batch
    kept = layers * tokens * hidden + per_layer if checkpointing else layers * per_layer
    return kept * bytes_per_value + 2 * tokens * vocab * 4


# -------------------------------------------------------------------------------------- probe
def _measure(step: Any, use_cuda: bool) -> tuple[float, float]:
    """(seconds, peak extra bytes) of `step()`: wall time and the memory high-water mark above
    what was held before (CUDA allocator, or the process's resident set on CPU)."""
    import torch

    if use_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_rss_peak()
        base = _current_rss()
    t0 = time.perf_counter()
    step()
    if use_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if use_cuda else rss_peak_bytes()) - base
    return seconds, max(peak, 0)


def _probe(model: Any, batch: dict[str, Any], use_cuda: bool) -> tuple[float, float]:
    """One causal-LM forward+backward; gradients are cleared afterwards."""
    model.train()
    batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()
             if k not in ("assistant_masks", "real_tokens")}
    result = _measure(lambda: model(**batch, use_cache=False).loss.backward(), use_cuda)
    model.zero_grad(set_to_none=True)
    return result


def _worst_case(batch: dict[str, Any], longest: int) -> dict[str, Any]:
    """The first batch stretched (by repeating its tokens) to the longest example's length."""
    import torch

    ids = batch["input_ids"]
    reps = -(-longest // ids.shape[1])
    out = {"input_ids": ids.repeat(1, reps)[:, :longest]}
    out["labels"] = out["input_ids"].clone()
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    return out


def _probe_step(trainer: Any, batch: dict[str, Any], use_cuda: bool) -> tuple[float, float]:
    """The trainer's own loss on one batch, forward and backward, without an optimizer step;
    gradients and the metrics it logged are cleared afterwards."""
    def step() -> None:
        trainer.model.train()
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
        loss.backward()

    result = _measure(step, use_cuda)
    trainer.model.zero_grad(set_to_none=True)
    for store in (getattr(trainer, "_metrics", None) or {}).values():  # TRL's per-step metric lists
        if hasattr(store, "clear"):
            store.clear()
    return result


def estimate(trainer: Any, spec: Any, use_cuda: bool, longest_tokens: int | None = None,
             probe: str = "forward") -> Estimate:
    """probe: 'forward' (causal-LM batches: worst-case length measured), 'step' (the trainer's
    own training step on the first batch: preference, reward, vision) or 'none' (GRPO, whose
    steps generate: weights and optimizer state only, time unknown)."""
    model = trainer.model
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = [p for p in params if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    grads = sum(p.numel() * p.element_size() for p in trainable)
    optimizer = n_trainable * 8  # AdamW: two fp32 moments per trainable parameter
    seconds, act = 0.0, float(grads)
    if probe == "forward":
        first = next(iter(trainer.get_train_dataloader()))
        seconds, act = _probe(model, first, use_cuda)  # packed: already the worst case's shape
        longest = min(longest_tokens or spec.max_seq_len, spec.max_seq_len)
        if "input_ids" in first and first["input_ids"].dim() == 2 and not spec.packing:
            _, act = _probe(model, _worst_case(first, longest), use_cuda)
    elif probe == "step":
        seconds, act = _probe_step(trainer, next(iter(trainer.get_train_dataloader())), use_cuda)
    per_epoch = -(-len(trainer.get_train_dataloader()) // spec.grad_accum)
    steps = trainer.state.max_steps or 0
    if not steps:
        steps = spec.max_steps if spec.max_steps > 0 else int(per_epoch * spec.epochs + 0.999)
    config = getattr(model, "config", None)
    attn = str(getattr(config, "_attn_implementation", None) or spec.attn_implementation or "sdpa")
    dtype_bytes = params[0].element_size() if params else 4
    modelled = (activation_model_bytes(config, spec.batch_size, spec.max_seq_len,
                                       checkpointing=spec.gradient_checkpointing,
                                       attn_implementation=attn, bytes_per_value=max(dtype_bytes, 2))
                if config is not None and hasattr(getattr(config, "text_config", None) or config,
                                                  "num_hidden_layers") else 0)
    if probe == "none":  # nothing measured: the modelled activations on top of the gradients
        act = float(grads + modelled)
    device, mem = device_memory(use_cuda)
    if use_cuda:
        import torch

        baseline = torch.cuda.memory_allocated()  # weights and everything already on the GPU
    else:
        baseline = _current_rss()  # the whole process: weights, libraries, data
    peak = baseline + act + optimizer  # the probe's extra memory includes the gradients
    step_seconds = seconds * 1.15  # the optimizer step and logging on top of forward+backward
    return Estimate(device, mem, weights / GB, n_trainable, sum(p.numel() for p in params),
                    grads / GB, optimizer / GB, act / GB, peak / GB, modelled / GB,
                    spec.gradient_checkpointing, attn, step_seconds, steps,
                    step_seconds * steps, per_epoch, step_seconds * per_epoch, probe)


def before_training(trainer: Any, spec: Any, use_cuda: bool, force: bool, *,
                    probe: str = "forward", longest_tokens: int | None = None) -> Estimate:
    """Estimate, print, and refuse (unless force) a run that cannot fit — before train()."""
    est = estimate(trainer, spec, use_cuda, longest_tokens, probe)
    err.print(est.line())
    check_fits(est, force)
    return est


def after_training(est: Estimate, train_seconds: float, steps: int, use_cuda: bool) -> dict[str, Any]:
    """The estimate next to what happened, printed and returned for the run's metrics."""
    result = {**est.as_dict(), **compare(est, train_seconds, measured_peak_gb(use_cuda), steps)}
    time_note = (f"{result['actual_seconds_per_step']:.2f} s/step (estimate off by "
                 f"{result['time_error_pct']}%)") if est.probe != "none" else "time not estimated"
    err.print(f"preflight check: {time_note}, peak {result['actual_peak_gb']:.2f} GiB "
              f"(estimate off by {result['memory_error_pct']}%)")
    return result


def check_fits(est: Estimate, force: bool) -> None:
    if est.peak_gb > est.device_memory_gb * 0.95 and not force:
        raise StudioError(
            f"estimated peak memory {est.peak_gb:.1f} GiB exceeds the {est.device_memory_gb:.1f} GiB "
            f"available on {est.device}",
            hint="lower batch_size or max_seq_len, use adapter: qlora, or pass --force to try anyway")


def measured_peak_gb(use_cuda: bool) -> float:
    if use_cuda:
        import torch

        return torch.cuda.max_memory_allocated() / GB
    return rss_peak_bytes() / GB


def compare(est: Estimate, actual_seconds: float, actual_peak_gb: float, steps: int) -> dict[str, Any]:
    per_step = actual_seconds / max(steps, 1)
    return {
        "estimated_seconds_per_step": round(est.seconds_per_step, 4),
        "actual_seconds_per_step": round(per_step, 4),
        "time_error_pct": round(100 * (est.seconds_per_step - per_step) / per_step, 1) if per_step else None,
        "estimated_peak_gb": round(est.peak_gb, 4),
        "actual_peak_gb": round(actual_peak_gb, 4),
        "memory_error_pct": round(100 * (est.peak_gb - actual_peak_gb) / actual_peak_gb, 1)
        if actual_peak_gb else None,
    }
