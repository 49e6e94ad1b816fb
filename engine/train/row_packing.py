"""Packed SFT batches as one row per packed bin, for attention kernels without varlen support.

TRL's padding-free packing (`packing: true`, strategy bfd) concatenates a batch's packed bins into
ONE row and relies on a varlen kernel (flash attention) to keep the sequences apart. With SDPA or
eager attention — CPU, or a GPU without flash-attn — transformers then builds a block-causal mask
over the whole flattened row, so a batch of B bins of L tokens pays attention over (B·L)² query/key
pairs of which at most B·L² can be non-zero: measured on SmolLM2-135M, L=256, B=4, that made packed
training slower than padded training (scripts/bench_train.py --diagnose).

Here the B bins stay B rows (padded to the longest bin, which bfd fills almost completely), with
`position_ids` restarting at every sequence and no attention_mask, so transformers builds the same
block-causal mask per row: (B·L²) pairs, the sequences still never see each other, and no padding
token is computed beyond the few at the end of a bin. The first token of every packed sequence is
not a target (as in TRL's collator). The loss is identical to the flattened layout — each token's
prediction depends only on its own sequence — which tests/train/test_packing.py checks.

TRL counts training tokens as the flattened row's length; with several rows it would count only
one, so the collator passes the real token count as `real_tokens`, which the trainer removes
before the forward and uses for `num_tokens` (tokens/s in metrics.jsonl).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import pad

REAL_TOKENS = "real_tokens"


def uses_varlen_kernel(model: Any) -> bool:
    """True when the model's attention takes TRL's flattened padding-free row efficiently."""
    impl = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")
    return impl.startswith(("flash", "kernels-community/flash"))


@dataclass
class RowPackedCollator(DataCollatorForLanguageModeling):
    """Collates packed examples (with `seq_lengths`) into B rows; anything else as the stock collator."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not examples or "seq_lengths" not in examples[0]:
            return super().torch_call(examples)
        input_ids = [torch.tensor(e["input_ids"]) for e in examples]
        labels = [torch.tensor(e.get("labels", e["input_ids"])) for e in examples]
        positions = self.get_position_ids_from_packed_seq_lengths([e["seq_lengths"] for e in examples])
        multiple = self.pad_to_multiple_of
        out = {
            "input_ids": pad(input_ids, padding_value=self.pad_token_id, padding_side="right",
                             pad_to_multiple_of=multiple),
            "labels": pad(labels, padding_value=-100, padding_side="right", pad_to_multiple_of=multiple),
            "position_ids": pad(positions, padding_value=0, padding_side="right",
                                pad_to_multiple_of=multiple),
        }
        out["labels"][out["position_ids"] == 0] = -100  # no target across a sequence boundary
        out[REAL_TOKENS] = torch.tensor(sum(len(ids) for ids in input_ids))
        return out


def install(trainer: SFTTrainer) -> bool:
    """Swap a packing trainer's flattening collator for the row collator, unless the model's
    attention is a varlen kernel (flash attention), for which one flattened row is best.
    (SFTTrainer refuses a custom collator with packing, hence the swap after construction.)"""
    stock = trainer.data_collator
    if uses_varlen_kernel(trainer.model) or not isinstance(stock, DataCollatorForLanguageModeling):
        return False
    trainer.data_collator = RowPackedCollator(pad_token_id=stock.pad_token_id, padding_free=True,
                                              pad_to_multiple_of=stock.pad_to_multiple_of)
    return True


class RowPackedSFTTrainer(SFTTrainer):
    """SFTTrainer whose token counter reads the collator's real token count."""

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        real = inputs.pop(REAL_TOKENS, None)
        before = self._total_train_tokens
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if real is not None and model.training:
            local = torch.as_tensor(real, device=inputs["input_ids"].device)
            total = int(self.accelerator.gather_for_metrics(local).sum().item())
            self._total_train_tokens = before + total // self._tp_size
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return result

    def prediction_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        inputs.pop(REAL_TOKENS, None)
        return super().prediction_step(model, inputs, *args, **kwargs)
