"""Padding-free DPO is exact: packed and padded batches give the same log-probs, loss and gradients."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.errors import StudioError
from engine.models.store import import_model
from tests.helpers import ROOT

WORDS = "my thermostat shows offline again after the firmware update "
# (prompt, chosen, rejected) lengths in repeats: ragged, so ~40% of the padded batch is padding
SHAPES = [(1, 12, 1), (6, 1, 3), (2, 3, 12), (13, 1, 1)]  # 30-350 tokens per sequence
ROWS = [{"prompt": [{"role": "user", "content": WORDS * p}],
         "chosen": [{"role": "assistant", "content": "Queue: TECH-SUPPORT | Priority: P2 " * c}],
         "rejected": [{"role": "assistant", "content": "sure, happy to help " * r}]}
        for p, c, r in SHAPES]
LOSS_TYPES = ["sigmoid", "ipo", "hinge", "apo_zero", "sft"]
# float32 on CPU: the packed forward multiplies the same numbers in other matrix shapes
# per-sequence sums of up to ~350 log-probs (down to -2200): measured ≤ 1.6e-5 abs, ≤ 8e-8 rel
LOGP_RTOL, LOGP_ATOL = 1e-6, 1e-4
TOKEN_ATOL = 1e-5  # single-token log-probs: measured ≤ 1e-6
LOSS_REL = 1e-6  # measured ≤ 1.1e-7
GRAD_REL = 2e-5  # L2 difference / L2 norm of each gradient tensor, measured ≤ 2.8e-6
METRIC_TOL = 1e-5  # logged rewards, logps, logits, entropy, accuracies (rel and abs)


def make_trainer(model_dir: Path, tmp: Path, packed: bool, adapter: str) -> Any:
    """A DPO trainer on the tiny model whose policy already differs from its reference (same seed both)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from engine.train.dpo_packing import PackedDPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    args = DPOConfig(output_dir=str(tmp / f"{adapter}-{int(packed)}"), use_cpu=True, bf16=False,
                     per_device_train_batch_size=len(ROWS), max_length=512, beta=0.1,
                     loss_type=["sigmoid"], report_to="none", activation_checkpointing=False, seed=0,
                     dataloader_num_workers=0)
    peft = (LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
            if adapter == "lora" else None)
    cls = PackedDPOTrainer if packed else DPOTrainer
    trainer = cls(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(ROWS),
                  peft_config=peft)
    # a fresh adapter (lora_B = 0) or an untrained model equals the reference: move the policy
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in sorted(trainer.model.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif adapter == "full":
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return trainer


def first_batch(trainer: Any) -> dict[str, Any]:
    return next(iter(trainer.get_train_dataloader()))


def policy_logps(trainer: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Per-token log-probs and per-sequence (chosen, rejected) sums of the policy, as in _compute_loss."""
    import torch

    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    packing = trainer.packing() if hasattr(trainer, "packing") else nullcontext()
    with torch.no_grad(), packing:
        out = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=labels, fused_lm_head=True, use_cache=False)
    return out.log_probs, out.log_probs.sum(dim=1).chunk(2)


@pytest.fixture(scope="module")
def pair(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Any]]:
    tmp = tmp_path_factory.mktemp("dpo-packing")
    return {adapter: (make_trainer(tiny_model_dir, tmp, False, adapter),
                      make_trainer(tiny_model_dir, tmp, True, adapter)) for adapter in ("lora", "full")}


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_packed_log_probs_equal_padded(pair, adapter: str) -> None:
    import torch

    padded, packed = pair[adapter]
    batch = first_batch(padded)
    assert torch.equal(batch["input_ids"], first_batch(packed)["input_ids"])
    assert batch["input_ids"].shape[0] == 2 * len(ROWS)  # nothing truncated away or dropped
    assert batch["attention_mask"].sum(dim=1).max() < 512
    assert (batch["attention_mask"] == 0).float().mean() > 0.35  # ragged: lots of padding to drop
    tok_a, (ch_a, rej_a) = policy_logps(padded, batch)
    tok_b, (ch_b, rej_b) = policy_logps(packed, batch)
    assert torch.allclose(tok_a, tok_b, rtol=0, atol=TOKEN_ATOL)  # token by token, zeros in the same places
    assert torch.allclose(ch_a, ch_b, rtol=LOGP_RTOL, atol=LOGP_ATOL)
    assert torch.allclose(rej_a, rej_b, rtol=LOGP_RTOL, atol=LOGP_ATOL)
    # the reference pass (adapter off / frozen copy) through the trainers' own method
    # (as in trl's precompute: the reference copy for full fine-tuning, else the policy, adapter off)
    ref_a = padded.compute_ref_log_probs(padded.ref_model or padded.model, batch)
    ref_b = packed.compute_ref_log_probs(packed.ref_model or packed.model, batch)
    for a, b in zip(ref_a, ref_b):
        assert torch.allclose(a, b, rtol=LOGP_RTOL, atol=LOGP_ATOL)
    assert not torch.allclose(ch_a, ref_a[0], atol=1.0)  # the policy really differs from the reference


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_packed_loss_metrics_and_gradients_equal_padded(pair, adapter: str) -> None:
    import torch

    padded, packed = pair[adapter]
    batch = first_batch(padded)
    for loss_type in LOSS_TYPES:
        losses = []
        for trainer in (padded, packed):
            trainer.loss_types, trainer.loss_weights = [loss_type], [1.0]
            trainer.model.zero_grad()
            trainer._metrics["train"].clear()
            trainer.model.train()
            loss = trainer.compute_loss(trainer.model, batch)
            loss.backward()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=LOSS_REL), loss_type
        if loss_type == "sigmoid":  # log 2 would mean policy == reference
            assert abs(losses[0] - math.log(2)) > 1e-3
        ma, mb = padded._metrics["train"], packed._metrics["train"]
        assert ma.keys() == mb.keys()
        for key in ma:
            assert mb[key] == pytest.approx(ma[key], rel=METRIC_TOL, abs=METRIC_TOL), (loss_type, key)
        grads_a = {n: p.grad for n, p in padded.model.named_parameters() if p.grad is not None}
        grads_b = {n: p.grad for n, p in packed.model.named_parameters() if p.grad is not None}
        assert grads_a and grads_a.keys() == grads_b.keys()
        for name, g in grads_a.items():
            err = float((g - grads_b[name]).norm() / g.norm().clamp(min=1e-12))
            assert err < GRAD_REL, (loss_type, name, err)
    padded.model.zero_grad()
    packed.model.zero_grad()


def test_packed_batch_is_one_row_without_padding(pair) -> None:
    """The backbone sees one row of the real tokens only, positions restarting per sequence."""
    _, packed = pair["lora"]
    batch = first_batch(packed)
    seen: list[dict[str, Any]] = []
    base = packed.model.get_base_model()
    stock_forward = vars(base)["forward"]  # trl's fused-LM-head forward
    backbone = base.model
    hook = backbone.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True)
    try:
        packed.compute_loss(packed.model, batch)
    finally:
        hook.remove()
    real = batch["attention_mask"].bool()
    assert len(seen) == 2  # the policy pass and the reference pass (adapter off)
    for kw in seen:
        ids, pos = kw["input_ids"], kw["position_ids"]
        assert tuple(ids.shape) == (1, int(real.sum()))  # every real token, no padding
        assert ids.shape[1] < real.numel()
        assert kw["attention_mask"] is None
        assert ids[0].tolist() == batch["input_ids"][real].tolist()
        starts = (pos[0] == 0).nonzero().flatten()
        assert len(starts) == 2 * len(ROWS)  # positions restart at 0 for every sequence
        assert (pos[0][starts[1:] - 1] + 1).tolist() == real.sum(dim=1)[:-1].tolist()
    assert vars(base)["forward"] is stock_forward  # packing is switched off again afterwards


def test_without_position_ids_the_packed_log_probs_differ(pair, monkeypatch) -> None:
    """The equality test can fail: one row without restarting positions mixes the sequences."""
    import torch

    from engine.train import dpo_packing

    padded, packed = pair["lora"]
    batch = first_batch(padded)
    _, (chosen, rejected) = policy_logps(padded, batch)
    real_pack = dpo_packing.pack

    def pack_without_positions(*args: Any) -> Any:
        inputs, scored, slots = real_pack(*args)
        del inputs["position_ids"]
        return inputs, scored, slots

    monkeypatch.setattr(dpo_packing, "pack", pack_without_positions)
    _, (chosen_b, rejected_b) = policy_logps(packed, batch)
    # the first sequence has nothing before it to mix with
    assert torch.allclose(chosen[:1], chosen_b[:1], rtol=LOGP_RTOL, atol=LOGP_ATOL)
    # what test_packed_log_probs_equal_padded asserts now fails, by far more than its tolerance
    assert not torch.allclose(chosen, chosen_b, rtol=LOGP_RTOL, atol=LOGP_ATOL)
    assert not torch.allclose(rejected, rejected_b, rtol=LOGP_RTOL, atol=LOGP_ATOL)
    assert (chosen - chosen_b).abs().max() > 0.1 and (rejected - rejected_b).abs().max() > 0.1


def test_packing_refuses_left_padding() -> None:
    import torch

    from engine.train.dpo_packing import pack

    ids = torch.tensor([[0, 5, 6], [7, 8, 9]])
    with pytest.raises(ValueError, match="right-padded"):
        pack(ids, torch.tensor([[0, 1, 1], [1, 1, 1]]), ids)


# ------------------------------------------------------------------------ through the recipe
@pytest.fixture
def project(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> Path:
    """configs/ next to generated data/preference, the tiny model imported as smollm2-135m-instruct."""
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "configs", proj / "configs")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_preference_data.py"), "--out",
                    str(proj / "data" / "preference"), "--pairs", "24", "--feedback", "24"],
                   check=True, capture_output=True, timeout=120)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    return proj


def quick(project: Path, name: str) -> Any:
    cfg = load_config(project / "configs" / name)
    cfg.train.max_steps = 2
    cfg.train.batch_size = 2
    cfg.train.max_seq_len = 128
    cfg.train.lora.r = 4
    cfg.train.learning_rate = 1e-3
    cfg.train.packing = True
    return cfg


def test_dpo_config_with_packing_trains(project, workspace, registry, monkeypatch) -> None:
    from engine.train import dpo_packing
    from engine.train.launch import train_run

    calls = []
    real_pack = dpo_packing.pack
    monkeypatch.setattr(dpo_packing, "pack", lambda *a: calls.append(1) or real_pack(*a))
    cfg = quick(project, "dpo.yaml")
    res = train_run(cfg, workspace, registry)
    assert registry.get_run(res.run_id)["status"] == "succeeded"
    assert calls  # the packed trainer ran the forwards
    assert (res.adapter_dir / "adapter_model.safetensors").is_file()
    rows = [json.loads(line) for line in (res.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["config"]["train"]["packing"] is True and manifest["metrics"]["steps"] == 2


def test_packing_is_refused_for_other_preference_methods(project, workspace, registry) -> None:
    from engine.train.launch import train_run

    cfg = quick(project, "kto.yaml")
    with pytest.raises(StudioError, match="packing") as info:
        train_run(cfg, workspace, registry)
    assert info.value.where == "train.packing"
    assert registry.list_runs(cfg.tenant) == []
