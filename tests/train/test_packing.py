"""Padding-free packing is exact: the loss over a packed batch equals the padded batch's loss."""

from __future__ import annotations

from pathlib import Path

import pytest

CONVS = [
    [{"role": "user", "content": "my order has not arrived " * k},
     {"role": "assistant", "content": "Queue: SHIPPING-DELAY | Priority: P" + str(1 + k % 3)}]
    for k in range(1, 7)
]


def _first_batch_loss(model_dir: Path, tmp: Path, packing: bool) -> tuple[float, int]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp / f"p{int(packing)}"), use_cpu=True, bf16=False,
                     per_device_train_batch_size=len(CONVS), max_length=512, packing=packing,
                     assistant_only_loss=True, report_to="none", activation_checkpointing=False,
                     seed=0, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, processing_class=tok,
                         train_dataset=Dataset.from_list([{"messages": c} for c in CONVS]))
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "assistant_masks"}, use_cache=False)
    trained = int((batch["labels"] != -100).sum())
    return float(out.loss), trained, batch["input_ids"].shape


@pytest.mark.parametrize("n", [len(CONVS)])
def test_packed_and_padded_losses_agree(tiny_model_dir: Path, tmp_path: Path, n: int) -> None:
    padded_loss, padded_tokens, padded_shape = _first_batch_loss(tiny_model_dir, tmp_path, False)
    packed_loss, packed_tokens, packed_shape = _first_batch_loss(tiny_model_dir, tmp_path, True)
    assert packed_shape[0] == 1 and padded_shape[0] == n  # one padding-free row vs n padded rows
    assert packed_shape[1] < padded_shape[0] * padded_shape[1]  # no padding left
    assert packed_tokens == padded_tokens
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
