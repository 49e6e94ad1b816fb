"""A run's final status is never left at 'running' by a signal: an interruption while the
manifest is written (after the last training step) marks the run interrupted, with no manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine.train.run as run_module
from engine.config import parse_config
from engine.privacy.jobs import Terminated
from engine.registry import Registry
from engine.workspace import Workspace

CONFIG = """kind: train
tenant: acme
train:
  base_model: tiny
  dataset: support@v1
"""
BASE = {"name": "tiny", "manifest_sha256": "0" * 64, "source_sha256": "1" * 64}
DATA = {"ref": "support@v1", "sha256": "2" * 64}


def _run(workspace: Workspace, registry: Registry) -> str:
    cfg = parse_config(CONFIG, "train.yaml")
    with run_module.tracked_run(cfg, workspace, registry, base_model=BASE, data_info=DATA) as handle:
        handle.adapter_dir.mkdir(parents=True)
        (handle.adapter_dir / "adapter_model.safetensors").write_bytes(b"x")
        run_id = handle.run_id
    return run_id


@pytest.mark.parametrize("error, status", [(Terminated, "interrupted"),
                                           (KeyboardInterrupt, "interrupted"),
                                           (RuntimeError, "failed")])
def test_a_signal_while_the_manifest_is_written(workspace: Workspace, registry: Registry,
                                               monkeypatch: pytest.MonkeyPatch,
                                               error: type[BaseException], status: str) -> None:
    def boom(*args: object, **kwargs: object) -> dict:
        raise error()

    monkeypatch.setattr(run_module, "run_sections", boom)
    with pytest.raises(error):
        _run(workspace, registry)
    (row,) = registry.list_runs("acme")
    assert row["status"] == status
    assert not (Path(row["path"]) / "manifest.json").exists()


def test_a_finished_run_has_its_manifest(workspace: Workspace, registry: Registry,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "run_sections", lambda *a, **k: {})
    monkeypatch.setattr(run_module, "environment_section", lambda: {})
    run_id = _run(workspace, registry)
    row = registry.get_run(run_id)
    assert row["status"] == "succeeded" and (Path(row["path"]) / "manifest.json").is_file()
