"""Preflight: a measured estimate before training, a refusal when it cannot fit, and the error after."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import StudioError
from engine.models.store import import_model
from engine.train import preflight
from engine.train.sft import train_sft
from tests.helpers import make_project, refined_dataset


@pytest.fixture
def cfg(tmp_path: Path, workspace, registry, tiny_model_dir: Path):
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    refined_dataset(project, workspace, registry)
    cfg = load_config(project / "configs" / "sft_lora.yaml")
    cfg.train.max_steps = 3
    return cfg


def test_estimate_is_recorded_and_compared(cfg, workspace, registry) -> None:
    res = train_sft(cfg, workspace, registry)
    p = res.metrics["preflight"]
    assert p["device"] == "cpu" and p["steps"] == 3
    assert 0 < p["trainable_params"] < p["total_params"]  # LoRA trains a small share
    assert p["optimizer_gb"] == pytest.approx(p["trainable_params"] * 8 / 1024**3, rel=1e-2)
    assert p["peak_gb"] > p["weights_gb"] > 0
    assert p["seconds_per_step"] > 0 and p["actual_seconds_per_step"] > 0
    assert p["memory_error_pct"] is not None and abs(p["memory_error_pct"]) < 90


def test_refuses_when_it_cannot_fit_unless_forced(cfg, workspace, registry, monkeypatch) -> None:
    monkeypatch.setattr(preflight, "device_memory", lambda use_cuda: ("cpu", 0.001))
    with pytest.raises(StudioError, match="exceeds the 0.0 GiB available") as info:
        train_sft(cfg, workspace, registry)
    assert "--force" in str(info.value)
    (run,) = registry.list_runs("default")
    assert run["status"] == "failed"
    res = train_sft(cfg, workspace, registry, force=True)
    assert registry.get_run(res.run_id)["status"] == "succeeded"


def test_packed_sft_run_with_preflight(cfg, workspace, registry) -> None:
    cfg.train.packing = True
    res = train_sft(cfg, workspace, registry)
    assert res.metrics["packing"] is True and res.metrics["preflight"]["activations_gb"] > 0
    assert registry.get_run(res.run_id)["status"] == "succeeded"


def test_activation_model_follows_checkpointing_and_the_attention_kernel() -> None:
    """A 7B-shaped decoder at 4k tokens: checkpointing keeps one layer's activations plus each
    layer's input, far less than every layer's; eager attention adds the seq×seq matrices."""
    from types import SimpleNamespace

    llama = SimpleNamespace(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                            intermediate_size=11008, vocab_size=32000)

    def gib(checkpointing: bool, attn: str | None, seq: int = 4096) -> float:
        return preflight.activation_model_bytes(llama, 1, seq, checkpointing=checkpointing,
                                                attn_implementation=attn, bytes_per_value=2) / 2**30

    assert gib(True, "sdpa") < gib(False, "sdpa") / 5
    assert gib(False, "eager") > gib(False, "sdpa") * 1.5  # 2·32 heads·4096² values per layer
    assert gib(False, "flash_attention_2") == gib(False, "sdpa") == gib(False, None)
    assert gib(True, "eager") > gib(True, "sdpa")
    assert gib(False, "eager", 512) / gib(False, "sdpa", 512) < gib(False, "eager") / gib(False, "sdpa")


def test_run_records_the_modelled_activations(cfg, workspace, registry) -> None:
    cfg.train.max_steps = 1
    cfg.train.attn_implementation = "eager"
    plain = train_sft(cfg, workspace, registry).metrics["preflight"]
    cfg.train.gradient_checkpointing = True
    cfg.train.attn_implementation = "sdpa"
    checkpointed = train_sft(cfg, workspace, registry).metrics["preflight"]
    assert checkpointed["gradient_checkpointing"] and not plain["gradient_checkpointing"]
    assert (plain["attn_implementation"], checkpointed["attn_implementation"]) == ("eager", "sdpa")
    assert 0 < checkpointed["activations_model_gb"] < plain["activations_model_gb"]
