"""Padding-free DPO: a batch's chosen and rejected sequences run as one packed row, with the same result.

trl 1.16 turns `DPOConfig(padding_free=True)` off ("temporarily unavailable after a refactor"), so
this module provides it. The idea:

  The collator still builds the stock padded batch: 2*B right-padded rows, [prompt+chosen]*B then
  [prompt+rejected]*B, with `completion_mask`. Every DPO forward (policy pass, reference pass with
  the adapter switched off or the frozen reference copy, and the precomputed reference pass) calls
  the model's fused LM head, `model(input_ids, attention_mask, labels, fused_lm_head=True)`, which
  returns per-token next-token log-probs (zero where the label is -100). Inside `PackedDPOTrainer`
  that call is packed:

    pack     the real tokens of the 2*B rows are concatenated into ONE row (no padding),
             `position_ids` restart at 0 for every sequence and `attention_mask` is None, so
             transformers 5 attends within each sequence only (block-diagonal causal mask) and
             applies the same rotary positions as in the padded rows; the next-token labels are
             shifted per sequence (`shift_labels`), so no sequence is scored on its neighbour's
             first token
    forward  one forward over the packed row (use_cache=False, as the fused head does)
    unpack   the per-token outputs are scattered back into the padded (2*B, L-1) layout, zeros
             at padding, exactly where the stock forward puts them

Everything after the forward is TRL's own `_compute_loss`, untouched: per-sequence sums over the
completion tokens, every loss type, rewards and the other metrics. Only the forward is packed.
trl 1.16 has no separate "concatenated forward" method (the forward, the loss and the metrics are
one ~330-line `_compute_loss`), so the two methods that run DPO forwards, `_compute_loss` and
`compute_ref_log_probs`, are overridden to run their stock bodies with the packed model call.
tests/train/test_dpo_packing.py shows packed == padded (log-probs, loss, gradients).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from trl import DPOTrainer

# per-token fields of trl's FusedCausalLMOutput, shape (rows, seq_len - 1) in the stock forward
PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor,
         labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """A right-padded batch as one row: the model inputs, and the two masks that undo it.

    Returns ({input_ids, position_ids, shift_labels} of shape (1, N), N = number of real tokens;
    `scored` (N,): packed positions whose next token is in the same sequence;
    `slots` (rows, L-1): where those positions sit in the stock (padded, shifted) output).
    """
    real = attention_mask.bool()
    lengths = real.sum(dim=1)
    positions = torch.arange(real.size(1), device=real.device)
    if not torch.equal(real, positions < lengths[:, None]):
        raise ValueError("packed DPO needs right-padded rows (the stock preference collator's layout)")
    has_next = F.pad(real[:, 1:], (0, 1))  # the token's successor belongs to the same sequence
    shift_labels = F.pad(labels[:, 1:], (0, 1), value=-100).masked_fill(~has_next, -100)
    inputs = {
        "input_ids": input_ids[real][None],
        "position_ids": positions.expand_as(real)[real][None],  # 0, 1, … restarting per sequence
        "shift_labels": shift_labels[real][None],
    }
    return inputs, has_next[real], real[:, 1:]


def unpack(packed: torch.Tensor, scored: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """A (1, N) per-token output back in the stock (rows, L-1) layout, zeros at padding."""
    return packed.new_zeros(slots.shape).masked_scatter(slots, packed[0][scored])


def packing_forward(fused_forward: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a fused-LM-head forward so that its `fused_lm_head=True` calls run packed."""

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("fused_lm_head"):  # generation and plain logits: untouched
            return fused_forward(*args, **kwargs)
        for name in ("inputs_embeds", "position_ids", "shift_labels"):
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"packed DPO cannot take {name!r} (prompt-learning PEFT, context "
                                 "parallelism): it packs input_ids itself")
        if args or kwargs.get("attention_mask") is None or kwargs.get("labels") is None:
            raise ValueError("packed DPO needs input_ids, attention_mask and labels as keywords")
        inputs, scored, slots = pack(kwargs.pop("input_ids"), kwargs.pop("attention_mask"),
                                     kwargs.pop("labels"))
        out = fused_forward(**kwargs, **inputs, attention_mask=None)
        for name in PER_TOKEN_FIELDS:
            value = getattr(out, name, None)
            if value is not None:
                setattr(out, name, unpack(value, scored, slots))
        return out

    return forward


class PackedDPOTrainer(DPOTrainer):
    """trl.DPOTrainer whose forwards run padding-free (see the module docstring); text data only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._is_vision_dataset:  # image tokens and pixel values are not packed
            raise ValueError("packed DPO supports text preference data only")

    @contextmanager
    def packing(self) -> Iterator[None]:
        """Inside: every fused-LM-head forward of the policy and the reference model runs packed."""
        if getattr(self, "_packing_on", False):  # nested: already packed
            yield
            return
        policy = self.accelerator.unwrap_model(self.model)
        # under PEFT the fused head sits on the base model (as DPOTrainer installs it), below the adapter
        models = [policy.get_base_model() if is_peft_model(policy) else policy]
        if self.ref_model is not None:
            models.append(self.accelerator.unwrap_model(self.ref_model))
        saved = [m.__dict__.get("forward") for m in models]  # the fused forward (an instance attribute)
        for m in models:
            m.forward = packing_forward(m.forward)
        self._packing_on = True
        try:
            yield
        finally:
            self._packing_on = False
            for m, fwd in zip(models, saved):
                if fwd is None:
                    del m.forward
                else:
                    m.forward = fwd

    # ----- the two DPO methods that run forwards: the stock bodies, with the packed forward
    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        with self.packing():
            return super()._compute_loss(model, inputs, return_outputs)

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        with self.packing():
            return super().compute_ref_log_probs(model, inputs)
