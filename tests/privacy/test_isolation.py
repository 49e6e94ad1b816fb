"""Tenant isolation (config paths into another tenant, names and ids as paths) and safe loading."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import StudioError
from engine.privacy.isolation import check_config_paths
from engine.workspace import Workspace, check_id, check_name

REFINE = """kind: refine
tenant: acme
refine:
  dataset: tickets
  inputs:
    - path: {path}
      format: openai_jsonl
"""


def _cfg(tmp_path: Path, path: str) -> object:
    f = tmp_path / "refine.yaml"
    f.write_text(REFINE.format(path=path))
    return load_config(f)


def test_config_path_into_another_tenant_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    other = workspace.tenant_dir("globex") / "raw" / "chats.jsonl"
    other.write_text("{}\n")
    own = workspace.tenant_dir("acme") / "raw" / "chats.jsonl"
    own.write_text("{}\n")
    check_config_paths(workspace, _cfg(tmp_path, str(own)))  # own data: fine
    check_config_paths(workspace, _cfg(tmp_path, str(tmp_path / "elsewhere.jsonl")))
    for bad in (str(other), str(workspace.tenant_dir("globex") / "raw" / "*.jsonl"),
                str(workspace.tenant_dir("acme") / ".." / "globex" / "raw" / "chats.jsonl")):
        with pytest.raises(StudioError, match="another tenant") as exc:
            check_config_paths(workspace, _cfg(tmp_path, bad))
        assert "refine.inputs[0].path" in str(exc.value)
    # a symlink planted in acme's own folder that points at globex's data
    link = workspace.tenant_dir("acme") / "raw" / "link.jsonl"
    os.symlink(other, link)
    with pytest.raises(StudioError, match="another tenant"):
        check_config_paths(workspace, _cfg(tmp_path, str(link)))
    rel = os.path.relpath(other, tmp_path)  # relative to the config's folder
    with pytest.raises(StudioError, match="another tenant"):
        check_config_paths(workspace, _cfg(tmp_path, rel))


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".hidden", "", "A" * 300, "x\x00y", "a\\b/..",
                                 "name\n"])
def test_ids_and_names_cannot_escape(workspace: Workspace, bad: str) -> None:
    with pytest.raises(StudioError):
        check_id(bad, "run")
    with pytest.raises(StudioError):
        workspace.run_dir("acme", bad)
    with pytest.raises(StudioError):
        workspace.eval_dir("acme", bad)
    with pytest.raises(StudioError):
        workspace.dataset_dir("acme", bad, 1)
    with pytest.raises(StudioError):
        workspace.model_dir(bad)
    with pytest.raises(StudioError):
        workspace.tenant_dir(bad)
    with pytest.raises(StudioError):
        check_name(bad, "dataset")


def test_real_ids_are_accepted(workspace: Workspace) -> None:
    from engine.eval.items import new_eval_id
    from engine.train.run import new_run_id

    assert workspace.run_dir("acme", new_run_id()).parent.name == "runs"
    assert workspace.eval_dir("acme", new_eval_id()).parent.name == "evals"


def test_only_safetensors_are_loaded(tiny_model_dir: Path, tmp_path: Path) -> None:
    from engine.models.loading import check_adapter, load_causal_lm, safe_load_kwargs

    kwargs = safe_load_kwargs(tiny_model_dir)
    assert kwargs == {"use_safetensors": True, "trust_remote_code": False}
    bin_only = tmp_path / "bin-model"
    shutil.copytree(tiny_model_dir, bin_only)
    for p in bin_only.glob("*.safetensors"):
        p.rename(p.with_name("pytorch_model.bin"))
    with pytest.raises(StudioError, match="pytorch_model.bin: pickle, refused"):
        load_causal_lm(bin_only)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(StudioError, match="no adapter_model.safetensors"):
        check_adapter(adapter)
    with pytest.raises(StudioError, match="no adapter_model.safetensors"):
        load_causal_lm(tiny_model_dir, adapter)


def test_trust_remote_code_only_when_allow_listed(workspace: Workspace, tiny_model_dir: Path) -> None:
    from engine.models.loading import remote_code_allowed

    target = workspace.models_dir / "tiny"
    shutil.copytree(tiny_model_dir, target)
    assert remote_code_allowed(target) is False
    (workspace.root / "privacy.yaml").write_text("trust_remote_code: [tiny]\n")
    assert remote_code_allowed(target) is True
    assert remote_code_allowed(tiny_model_dir) is False  # outside a store: never
    (workspace.root / "privacy.yaml").write_text("trust_remote_code: tiny\n")
    with pytest.raises(StudioError, match="trust_remote_code"):
        remote_code_allowed(target)
