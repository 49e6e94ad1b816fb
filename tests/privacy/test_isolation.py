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


def test_glob_characters_and_dotdot_after_a_missing_folder_do_not_hide_a_path(
        workspace: Workspace, tmp_path: Path) -> None:
    """The red team's repro: '[x]' or '*' in a folder name, then '..' back up into globex."""
    target = workspace.tenant_dir("globex") / "datasets" / "g" / "v1"
    target.mkdir(parents=True)
    (target / "val.jsonl").write_text('{"secret": 1}\n')
    up = "/".join([".."] * len(tmp_path.parts))  # from tmp_path/<x>/ back to /
    for trick in ("[x]", "*", "missing"):
        value = f"{tmp_path}/{trick}/../{up}{target}/val.jsonl"
        with pytest.raises(StudioError, match=r"'\.\.' after .* not an existing folder"):
            check_config_paths(workspace, _cfg(tmp_path, value))
    # the same folder names created for real: the path now exists, and is judged by where it lands
    for trick in ("[x]", "*"):
        (tmp_path / trick).mkdir()
        value = f"{tmp_path}/{trick}/../{up}{target}/val.jsonl"
        with pytest.raises(StudioError, match="another tenant") as exc:
            check_config_paths(workspace, _cfg(tmp_path, value))
        assert "refine.inputs[0].path" in str(exc.value)


def test_workspace_internals_are_refused(workspace: Workspace, tmp_path: Path) -> None:
    from engine.registry import Registry

    Registry(workspace.registry_path)  # creates registry.sqlite
    for inside in (workspace.registry_path, workspace.root / "audit" / "log.jsonl", workspace.root,
                   workspace.root / "tenants"):
        with pytest.raises(StudioError, match="internal files|tenants folder"):
            check_config_paths(workspace, _cfg(tmp_path, str(inside)))
    check_config_paths(workspace, _cfg(tmp_path, str(workspace.models_dir / "tiny")))  # shared models


def test_a_folder_input_with_a_symlink_to_another_tenant_is_refused(
        workspace: Workspace, tmp_path: Path) -> None:
    other = workspace.tenant_dir("globex") / "raw" / "chats.jsonl"
    other.write_text("{}\n")
    folder = tmp_path / "inputs" / "sub"
    folder.mkdir(parents=True)
    (folder / "ok.jsonl").write_text("{}\n")
    check_config_paths(workspace, _cfg(tmp_path, str(tmp_path / "inputs")))
    os.symlink(other, folder / "sneaky.jsonl")
    with pytest.raises(StudioError, match="another tenant"):
        check_config_paths(workspace, _cfg(tmp_path, str(tmp_path / "inputs")))


def test_the_policy_stays_bound_for_paths_resolved_later(workspace: Workspace, tmp_path: Path) -> None:
    """Readers call cfg.resolve_path when they open a file; after the job's check every such call
    is checked too (a path built or swapped after the up-front check is still refused)."""
    own = workspace.tenant_dir("acme") / "raw" / "chats.jsonl"
    own.write_text("{}\n")
    cfg = _cfg(tmp_path, str(own))
    check_config_paths(workspace, cfg)
    assert cfg.resolve_path(str(own)) == own.resolve()
    other = workspace.tenant_dir("globex") / "raw" / "x.jsonl"
    with pytest.raises(StudioError, match="another tenant"):
        cfg.resolve_path(str(other))
    link = tmp_path / "later.jsonl"  # a symlink planted after the check
    os.symlink(other, link)
    with pytest.raises(StudioError, match="another tenant"):
        cfg.resolve_path(str(link))


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
