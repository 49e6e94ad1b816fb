"""Locating the vLLM interpreter and preparing model dirs for vLLM's transformers (no vLLM needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engine.errors import StudioError
from engine.generation import vllm_env


def test_interpreter_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vllm_env.ENV_PYTHON, raising=False)
    assert vllm_env.candidate_python() == vllm_env.PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
    monkeypatch.setenv(vllm_env.ENV_PYTHON, str(tmp_path / "env-python"))
    assert vllm_env.candidate_python() == tmp_path / "env-python"
    assert vllm_env.candidate_python(str(tmp_path / "cfg-python")) == tmp_path / "cfg-python"


def test_missing_or_vllm_less_interpreter(tmp_path: Path) -> None:
    assert vllm_env.find_vllm(tmp_path / "nope") is None
    with pytest.raises(StudioError) as err:
        vllm_env.require_vllm(tmp_path / "nope")
    assert "no Python interpreter" in str(err.value) and "setup_vllm_env.sh" in str(err.value)
    # this test interpreter exists but has no vLLM
    assert vllm_env.find_vllm(sys.executable) is None
    with pytest.raises(StudioError, match="vLLM is not installed"):
        vllm_env.require_vllm(sys.executable)


def test_adjust_config_adds_legacy_rope_keys() -> None:
    cfg = {"model_type": "llama", "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    new = vllm_env.adjust_config(cfg)
    assert new is not None and new["rope_theta"] == 1e4 and "rope_scaling" not in new
    assert new["rope_parameters"] == cfg["rope_parameters"]          # both forms kept
    assert "rope_theta" not in cfg                                   # input not modified
    scaled = {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}}
    assert vllm_env.adjust_config(scaled)["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    vlm = {"model_type": "llava", "text_config": {"model_type": "llama",
                                                   "rope_parameters": {"rope_theta": 7.0}}}
    assert vllm_env.adjust_config(vlm)["text_config"]["rope_theta"] == 7.0
    assert vllm_env.adjust_config({"model_type": "llama", "rope_theta": 1e4}) is None


def test_for_vllm_shadows_without_touching_the_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    cfg = {"model_type": "llama", "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    (model / "config.json").write_text(json.dumps(cfg))
    (model / "model.safetensors").write_bytes(b"weights")
    before = (model / "config.json").read_bytes()
    shadow = vllm_env.for_vllm(model, tmp_path / "work")
    assert shadow != model and shadow.is_relative_to(tmp_path / "work")
    assert (shadow / "model.safetensors").is_symlink()
    assert (shadow / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((shadow / "config.json").read_text())["rope_theta"] == 1e4
    assert (model / "config.json").read_bytes() == before
    assert vllm_env.for_vllm(model, tmp_path / "work") == shadow     # reused
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps({"model_type": "llama", "rope_theta": 1e4}))
    assert vllm_env.for_vllm(legacy, tmp_path / "work") == legacy.resolve()
    with pytest.raises(StudioError, match="no config.json"):
        vllm_env.for_vllm(tmp_path / "work", tmp_path / "work2")


def test_cpu_head_size_check(tmp_path: Path, tiny_model_dir: Path) -> None:
    # engine.models.tiny's model has 4 heads of 16: vLLM's CPU kernels refuse it at the 1st request
    assert "head size 16" in (vllm_env.cpu_unsupported(tiny_model_dir) or "")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 2}))
    assert vllm_env.cpu_unsupported(tmp_path) is None
