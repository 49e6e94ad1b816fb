"""The per-verb hooks: success, failure and Ctrl-C are audited; an encrypted tenant's view is
sealed back and wiped however the job ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import StudioError
from engine.privacy import audit, jobs, keys
from engine.workspace import Workspace


def test_success_failure_interrupt_are_recorded(workspace: Workspace) -> None:
    with jobs.session():
        jobs.begin(workspace, "export", "acme", ids={"run_id": "run-1"})
        jobs.done(ids={"path": "tenants/acme/runs/run-1/export/adapter"})
    with pytest.raises(StudioError), jobs.session():
        jobs.begin(workspace, "diff", "acme", ids={"base_eval": "a"})
        raise StudioError("unknown eval")
    with pytest.raises(KeyboardInterrupt), jobs.session():
        jobs.begin(workspace, "train", "acme")
        raise KeyboardInterrupt
    with jobs.session():  # returned without done(): e.g. typer.Exit inside the verb
        jobs.begin(workspace, "eval", "acme")
    got = [(e["action"], e["ids"].get("error")) for e in audit.entries(workspace)]
    assert got == [("export", None), ("diff.failed", "StudioError"),
                   ("train.interrupted", "KeyboardInterrupt"), ("eval.failed", "exit")]
    assert audit.entries(workspace)[0]["ids"] == {"run_id": "run-1",
                                                 "path": "tenants/acme/runs/run-1/export/adapter"}
    assert audit.verify(workspace).ok


def test_encrypted_view_is_closed_on_ctrl_c(workspace: Workspace, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_VIEW_DIR", str(tmp_path / "views"))
    (workspace.root / "privacy.yaml").write_text("tenants: {acme: {encryption: true}}\n")
    keys.tenant_key(workspace, "acme", create=True)
    tdir = workspace.tenant_dir("acme")
    with pytest.raises(KeyboardInterrupt), jobs.session():
        jobs.begin(workspace, "train", "acme")
        assert tdir.is_symlink()
        (tdir / "runs" / "run-9").mkdir()
        (tdir / "runs" / "run-9" / "metrics.jsonl").write_text('{"loss": 1}\n')
        raise KeyboardInterrupt
    assert not tdir.is_symlink()
    assert (tdir / "runs" / "run-9" / "metrics.jsonl.sealed").is_file()
    assert not (tdir / "runs" / "run-9" / "metrics.jsonl").exists()
    assert list((tmp_path / "views").rglob("view-*")) == []
    assert audit.entries(workspace)[-1]["action"] == "train.interrupted"


def test_encrypted_tenant_without_key_fails_before_work(workspace: Workspace) -> None:
    (workspace.root / "privacy.yaml").write_text("tenants: {acme: {encryption: true}}\n")
    with pytest.raises(StudioError, match="no encryption key"), jobs.session():
        jobs.begin(workspace, "refine", "acme")


@pytest.mark.parametrize("env, expect", [
    ({}, (False, False)),
    ({"WORLD_SIZE": "2", "RANK": "1", "STUDIO_LAUNCHER_PID": "123"}, (True, False)),
    ({"WORLD_SIZE": "2", "RANK": "0", "STUDIO_LAUNCHER_PID": "123"}, (True, False)),
    ({"WORLD_SIZE": "2", "RANK": "0"}, (False, True)),
    ({"WORLD_SIZE": "2", "RANK": "1"}, (True, True)),
])
def test_distributed_ranks(env: dict, expect: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "STUDIO_LAUNCHER_PID"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert jobs._distributed() == expect


def test_worker_of_studio_launcher_records_nothing(workspace: Workspace,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("STUDIO_LAUNCHER_PID", "1")
    with jobs.session():
        jobs.begin(workspace, "train", "acme")
        jobs.done(ids={"worker": True})
    assert audit.entries(workspace) == []
