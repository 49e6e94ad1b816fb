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


def test_row_packing_keeps_bins_as_rows_with_the_same_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    """engine/train/row_packing.py: B packed bins stay B rows (SDPA/eager attention) — same loss,
    same trained tokens as the padded batch and as TRL's flattened row, and the real token count."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from engine.train import row_packing

    padded_loss, padded_tokens, _ = _first_batch_loss(tiny_model_dir, tmp_path, False)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True,
                                                 dtype=torch.float32)
    longest = max(len(tok(tok.apply_chat_template(c, tokenize=False),
                          add_special_tokens=False)["input_ids"]) for c in CONVS)
    args = SFTConfig(output_dir=str(tmp_path / "rows"), use_cpu=True, bf16=False,
                     per_device_train_batch_size=len(CONVS), max_length=longest + 8, packing=True,
                     assistant_only_loss=True, report_to="none", activation_checkpointing=False,
                     seed=0, dataloader_num_workers=0)
    trainer = row_packing.RowPackedSFTTrainer(
        model=model, args=args, processing_class=tok,
        train_dataset=Dataset.from_list([{"messages": c} for c in CONVS]))
    assert row_packing.install(trainer)  # tiny model: sdpa, not a varlen kernel
    batch = next(iter(trainer.get_train_dataloader()))
    rows, width = batch["input_ids"].shape
    assert rows >= 2 and width <= longest + 8  # several bins, none longer than max_length
    real = int(batch.pop(row_packing.REAL_TOKENS))
    assert real == int(sum(len(x) for x in trainer.train_dataset["input_ids"]))  # every token, once
    assert real < rows * width or rows * width == real
    model.eval()
    with torch.no_grad():
        out = model(**batch, use_cache=False)
    assert int((batch["labels"] != -100).sum()) == padded_tokens
    assert float(out.loss) == pytest.approx(padded_loss, rel=1e-5)


def test_row_packed_trainer_counts_every_row(tiny_model_dir: Path, tmp_path: Path) -> None:
    """TRL would count one row per batch with position_ids; the row trainer counts real tokens."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from engine.train import row_packing

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True,
                                                 dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp_path / "count"), use_cpu=True, bf16=False,
                     per_device_train_batch_size=3, max_length=40, packing=True, max_steps=1,
                     report_to="none", activation_checkpointing=False, seed=0,
                     dataloader_num_workers=0, save_strategy="no", logging_steps=1)
    trainer = row_packing.RowPackedSFTTrainer(
        model=model, args=args, processing_class=tok,
        train_dataset=Dataset.from_list([{"messages": c} for c in CONVS]))
    assert row_packing.install(trainer)
    first = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    trainer.train()
    assert trainer._total_train_tokens == int(first[row_packing.REAL_TOKENS])
    assert trainer._total_train_tokens > first["input_ids"].shape[1]  # more than one row's worth
