"""Encrypted tenants: a job sees a decrypted tmpfs view through `tenants/<t>`; changes are sealed
back, deletions propagate, the plaintext is wiped, and a killed job is recovered."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from engine.privacy import crypto, keys, view
from engine.workspace import Workspace


@pytest.fixture
def sealed_tenant(workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    monkeypatch.setenv("STUDIO_VIEW_DIR", str(tmp_path / "views"))
    tdir = workspace.tenant_dir("acme")
    (tdir / "raw" / "a.csv").write_text("alpha secret\n")
    (tdir / "runs" / "run-1").mkdir()
    (tdir / "runs" / "run-1" / "manifest.json").write_text("{}")
    key = keys.tenant_key(workspace, "acme", create=True)
    crypto.seal_tree(key, "acme", tdir)
    return workspace, key, tdir


def _plain(tdir: Path) -> list[str]:
    return sorted(p.relative_to(tdir).as_posix() for p in tdir.rglob("*")
                  if p.is_file() and not p.name.endswith(".sealed"))


def test_view_roundtrip(sealed_tenant: tuple) -> None:
    ws, key, tdir = sealed_tenant
    v = view.open_view(ws, "acme", key)
    assert tdir.is_symlink() and Path(os.readlink(tdir)) == v.view
    assert (tdir / "raw" / "a.csv").read_text() == "alpha secret\n"  # old paths keep working
    (tdir / "raw" / "a.csv").write_text("alpha changed\n")
    (tdir / "datasets" / "d" / "v1").mkdir(parents=True)
    (tdir / "datasets" / "d" / "v1" / "train.jsonl").write_text("new rows\n")
    shutil.rmtree(tdir / "runs" / "run-1")
    (tdir / "tmp" / "cache.bin").write_text("scratch")
    res = view.close_view(v, key)
    assert res == {"sealed": 2, "removed": 1}
    assert not tdir.is_symlink() and tdir.is_dir()
    assert not v.view.exists()
    assert _plain(tdir) == []  # at rest: ciphertext only
    assert not (tdir / "runs" / "run-1").exists()
    v2 = view.open_view(ws, "acme", key)
    assert (tdir / "raw" / "a.csv").read_text() == "alpha changed\n"
    assert (tdir / "datasets" / "d" / "v1" / "train.jsonl").read_text() == "new rows\n"
    view.close_view(v2, key)
    assert list(view._tenant_base(ws, "acme").iterdir()) == []


def test_killed_job_is_recovered(sealed_tenant: tuple) -> None:
    ws, key, tdir = sealed_tenant
    v = view.open_view(ws, "acme", key)
    (tdir / "raw" / "b.csv").write_text("written before the crash\n")
    # the process dies here: no close_view. The next job recovers first.
    v2 = view.open_view(ws, "acme", key)
    assert not v.view.exists()  # the stale plaintext view is gone
    assert (tdir / "raw" / "b.csv").read_text() == "written before the crash\n"
    view.close_view(v2, key)
    assert _plain(tdir) == [] and (tdir / "raw" / "b.csv.sealed").is_file()


def test_plaintext_that_appeared_outside_a_job_is_sealed(sealed_tenant: tuple) -> None:
    ws, key, tdir = sealed_tenant
    (tdir / "raw" / "late.csv").write_text("late upload\n")
    v = view.open_view(ws, "acme", key)
    assert (tdir / "raw" / "late.csv").read_text() == "late upload\n"
    view.close_view(v, key)
    assert _plain(tdir) == []


def test_view_refuses_wrong_key_and_leaves_store_intact(sealed_tenant: tuple) -> None:
    ws, key, tdir = sealed_tenant
    with pytest.raises(InvalidTag):
        view.open_view(ws, "acme", os.urandom(32))
    assert tdir.is_dir() and not tdir.is_symlink() and (tdir / "raw" / "a.csv.sealed").is_file()
    assert list(view._tenant_base(ws, "acme").iterdir()) == []


def test_dev_shm_is_detected_as_memory_backed(tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    assert view.memory_backed(Path("/dev/shm"))
    assert view._fstype(tmp_path) is not None
