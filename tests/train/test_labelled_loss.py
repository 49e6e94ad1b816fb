"""engine/train/labelled_loss.py: on CPU the fused LM head scores only labelled positions, with
the same loss, gradients and metrics as TRL's score-everything path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _model(model_dir: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM",
                      init_lora_weights=False)  # non-zero B: the LoRA gradients are not trivially 0
    return get_peft_model(model, lora)


def test_compact_scoring_matches_full_scoring(tiny_model_dir: Path, monkeypatch) -> None:
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils

    from engine.train.labelled_loss import labelled_positions_only

    model = _model(tiny_model_dir)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 200, (3, 40), generator=gen)
    labels = ids.clone()
    labels[:, :25] = -100  # a prompt of 25 tokens: not trained
    labels[2, 30:] = -100  # padding in the last row
    batch = {"input_ids": ids, "labels": labels,
             "position_ids": torch.arange(40).repeat(3, 1)}
    rows_seen: list[int] = []
    real_apply = kernel.ChunkedLogProbFunction.apply

    def counting_apply(hidden, *args, **kwargs):
        rows_seen.append(hidden.shape[0])
        return real_apply(hidden, *args, **kwargs)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting_apply)

    def step() -> tuple[float, dict[str, torch.Tensor], object]:
        model.zero_grad()
        out = model(**batch, fused_lm_head=True)
        out.loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return out.loss.item(), grads, out

    full_loss, full_grads, full_out = step()
    with labelled_positions_only() as active:
        compact_loss, compact_grads, compact_out = step()
    assert active
    after_loss, _, _ = step()

    n_labelled = int((labels[:, 1:] != -100).sum())
    assert rows_seen == [3 * 39, n_labelled, 3 * 39]  # every position, labelled only, restored
    assert n_labelled < 3 * 39 / 2
    assert compact_loss == pytest.approx(full_loss, rel=1e-6)
    assert after_loss == full_loss
    for name, grad in full_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(compact_out.entropy, full_out.entropy, rtol=1e-5, atol=1e-6)
    assert torch.equal(compact_out.is_top1, full_out.is_top1)
