"""Foundation file safety: atomic writes survive a power cut (the rename is made durable), and the
workspace root and registry database are readable by their owner only."""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest

from engine.atomic import atomic_write, write_text_atomic
from engine.registry import Registry, connect
from engine.workspace import Workspace


def test_atomic_write_fsyncs_the_directory_after_the_rename(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an fsync of the directory, the rename itself may be lost in a power cut: the old
    file (or none) comes back. The real fsync runs; this only notes what each one was given."""
    target = tmp_path / "out.json"
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def noting_fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append(("dir" if stat.S_ISDIR(mode) else "file", target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", noting_fsync)
    write_text_atomic(target, "{}")
    assert target.read_text() == "{}"
    assert ("file", False) in synced  # the content, before the rename
    assert ("dir", True) in synced, synced  # the directory entry, after the rename
    assert synced.index(("dir", True)) > synced.index(("file", False))


def test_atomic_write_leaves_no_temp_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_existing_workspace_root_is_tightened_to_0700(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    Workspace(root).ensure()
    assert _mode(root) == 0o700
    os.chmod(root, 0o750)  # loosened later by hand: the next open tightens it again
    Workspace(root).ensure()
    assert _mode(root) == 0o700


def test_registry_database_and_its_wal_files_are_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        ws = Workspace(tmp_path / "ws").ensure()
        Registry(ws.registry_path)
        assert _mode(ws.registry_path) == 0o600
        # a registry created 0644 by an older version, in WAL mode with its -wal/-shm files open
        os.chmod(ws.registry_path, 0o644)
        with closing(sqlite3.connect(ws.registry_path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS t (x)")
            db.commit()
            for suffix in ("-wal", "-shm"):
                side = Path(f"{ws.registry_path}{suffix}")
                if side.exists():
                    os.chmod(side, 0o644)
            Registry(ws.registry_path)
            sides = [Path(f"{ws.registry_path}{s}") for s in ("-wal", "-shm")]
            assert any(p.exists() for p in sides)
            for p in [ws.registry_path, *sides]:
                if p.exists():
                    assert _mode(p) == 0o600, p
        # a database that another module opens first through connect() is 0600 from the start
        other = tmp_path / "ws2" / "registry.sqlite"
        other.parent.mkdir()
        with connect(other) as db:
            db.execute("CREATE TABLE x (y)")
        assert _mode(other) == 0o600
    finally:
        os.umask(old)
