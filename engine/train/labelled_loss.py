"""Score only the labelled positions in TRL's fused LM head on devices without Triton (CPU).

TRL (1.16) computes the SFT loss with a fused, chunked LM head (`add_fused_lm_head`): it never
materialises the `(batch, seq, vocab)` logits, and on CUDA it projects only the positions whose
next-token label is not -100 ("compact"). On devices without Triton it scores EVERY position
instead — a choice made for compiled backends (Neuron) where a varying number of rows would
recompile the tiles. Eager CPU has no such cost, but with assistant-only loss half or more of the
positions are prompts, system text and padding: each one costs a projection onto the 49k-token
vocabulary and ~10 passes of the torch fallback's online-softmax over a `[tokens, 32768]` tile,
all thrown away by the mask.

`labelled_positions_only()` makes the fused head take its compact path on CPU for the duration
of a training call. The loss, gradients and TRL's logged metrics (entropy, token accuracy) are
unchanged — only positions that are masked out anyway are skipped (tests/train/test_labelled_loss.py
checks loss and gradients against TRL's own path). The switch is TRL's module-level
`_use_triton` lookup in `trl.trainer.utils`; if a TRL release renames it, the context manager
does nothing and says so (`active` is False), and training is exactly TRL's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def labelled_positions_only() -> Iterator[bool]:
    """While active, TRL's fused LM head projects only labelled positions on every device.
    Yields whether the switch could be applied."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a hard dependency
        yield False
        return
    original = getattr(trl_utils, "_use_triton", None)
    if not callable(original):
        yield False
        return

    def compact(device: Any) -> bool:
        # CUDA/XPU keep TRL's own answer; every other eager device takes the compact path too
        return True if getattr(device, "type", None) not in ("cuda", "xpu") else original(device)

    trl_utils._use_triton = compact
    try:
        yield True
    finally:
        trl_utils._use_triton = original
