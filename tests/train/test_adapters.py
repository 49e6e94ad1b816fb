"""SFT with every adapter kind on the tiny model: full fine-tuning, DoRA and QLoRA (4-bit, on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.models.store import import_model
from engine.train.sft import train_sft
from tests.helpers import make_project, refined_dataset


@pytest.fixture
def project(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> Path:
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    refined_dataset(project, workspace, registry)
    return project


def _cfg(project: Path, name: str):
    cfg = load_config(project / "configs" / name)
    cfg.train.max_steps = 2
    return cfg


def test_full_fine_tuning_writes_a_whole_model(project, workspace, registry, tiny_model_dir) -> None:
    from safetensors.torch import load_file

    cfg = _cfg(project, "sft_full.yaml")
    cfg.train.learning_rate = 1e-2
    res = train_sft(cfg, workspace, registry)
    assert res.adapter_dir.name == "model" and not (res.path / "adapter").exists()
    trained = load_file(res.adapter_dir / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    changed = [k for k in base if k in trained and not (trained[k] == base[k]).all()]
    assert len(changed) > len(base) // 2  # (nearly) every weight moved
    assert res.metrics["preflight"]["trainable_params"] == res.metrics["preflight"]["total_params"]
    assert (res.adapter_dir / "chat_template.jinja").is_file()


def test_dora_adds_magnitude_vectors(project, workspace, registry) -> None:
    from safetensors.torch import load_file

    res = train_sft(_cfg(project, "sft_dora.yaml"), workspace, registry)
    keys = load_file(res.adapter_dir / "adapter_model.safetensors").keys()
    assert any("lora_magnitude_vector" in k for k in keys)
    assert registry.get_run(res.run_id)["status"] == "succeeded"


def test_qlora_trains_on_a_4bit_base_on_cpu(project, workspace, registry) -> None:
    pytest.importorskip("bitsandbytes")
    import json

    res = train_sft(_cfg(project, "qlora.yaml"), workspace, registry)
    assert registry.get_run(res.run_id)["status"] == "succeeded"
    assert (res.adapter_dir / "adapter_model.safetensors").is_file()
    p = res.metrics["preflight"]
    # the frozen base is stored in 4 bits: far fewer bytes than fp32 weights would take
    assert p["weights_gb"] * 1024**3 < p["total_params"] * 4 * 0.75  # tiny model: embeddings stay fp32
    cfg = json.loads((res.path / "manifest.json").read_text())["config"]
    assert cfg["train"]["adapter"] == "qlora" and cfg["train"]["quant"]["bits"] == 4


def test_qlora_without_bitsandbytes_is_a_clear_error(project, workspace, registry, monkeypatch) -> None:
    import builtins

    from engine.errors import StudioError

    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("no bitsandbytes")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(StudioError, match="needs the bitsandbytes package"):
        train_sft(_cfg(project, "qlora.yaml"), workspace, registry)
