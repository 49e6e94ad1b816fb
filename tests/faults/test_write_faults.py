"""Fault injection on writes: a full disk (ENOSPC) while a dataset version is written, and torn
writes of the SQLite registry (SIGKILL in the middle of a stream of registrations, a truncated or
corrupted write-ahead log, a damaged database file).

After each fault: one clear message (no traceback), nothing half-written visible (no version
directory, no temp directory, no half row), the audit log tells the truth, and the next command
works.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.privacy import audit
from engine.registry import Registry
from engine.workspace import Workspace
from tests.helpers import ROOT, make_project, studio

SEED = int(os.environ.get("STUDIO_FAULT_SEED", "1515"))


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    got = capsys.readouterr()
    return code, got.out + got.err


# ------------------------------------------------------------------------- disk full (ENOSPC)
class _FullDisk:
    """A text file whose device fills up after `room` more bytes: the write that crosses the
    limit stores what fits, then fails like the kernel does (OSError ENOSPC)."""

    def __init__(self, f: Any, room: int):
        self._f, self._room = f, room

    def write(self, text: str) -> int:
        if len(text) > self._room:
            self._f.write(text[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(text)
        return self._f.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> "_FullDisk":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


@pytest.mark.parametrize("room", [0, 3000])
def test_disk_full_while_writing_a_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], room: int) -> None:
    proj = make_project(tmp_path / "proj", tickets=60)
    ws = Workspace(tmp_path / "ws").ensure()
    config = str(proj / "configs" / "refine_tickets.yaml")
    real_open = builtins.open

    def shim(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = real_open(file, mode, *args, **kw)
        path = Path(str(file)) if isinstance(file, (str, os.PathLike)) else None
        if path is not None and path.name == "train.jsonl" and "w" in mode \
                and path.is_relative_to(ws.root):
            return _FullDisk(f, room)
        return f

    monkeypatch.setattr(builtins, "open", shim)
    code, output = _cli(capsys, "--workspace", str(ws.root), "refine", config)
    assert code == 2, output
    assert "Traceback" not in output
    assert "no space left on device while writing dataset brightwave-tickets" in output, output
    assert "nothing of this version was kept" in output
    datasets = ws.tenant_dir("default") / "datasets" / "brightwave-tickets"
    assert list(datasets.iterdir()) == []  # no v1, no .partial-*
    assert Registry(ws.registry_path).list_datasets("default") == []
    last = audit.entries(ws)[-1]
    assert (last["action"], last["ids"]["error"]) == ("refine.failed", "DiskFull"), last
    assert list(ws.tmp_dir("default").iterdir()) == []

    monkeypatch.setattr(builtins, "open", real_open)  # space again: the next refine is v1
    code, output = _cli(capsys, "--workspace", str(ws.root), "refine", config)
    assert code == 0, output
    assert [r["version"] for r in Registry(ws.registry_path).list_datasets("default")] == [1]
    assert sorted(p.name for p in datasets.iterdir()) == ["v1"]
    assert audit.entries(ws)[-1]["action"] == "refine"
    assert _cli(capsys, "--workspace", str(ws.root), "audit", "verify")[0] == 0


def test_disk_full_in_any_verb_is_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str],
                                              tiny_model_dir: Path) -> None:
    """Beyond the refine: a full disk anywhere is one message and exit 2, not a traceback."""
    from engine.models import store

    ws = Workspace(tmp_path / "ws").ensure()

    def full(src: Any, dst: Any, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(store.shutil, "copyfile", full)
    code, output = _cli(capsys, "--workspace", str(ws.root), "models", "import",
                        str(tiny_model_dir), "--name", "tiny")
    assert code == 2, output
    assert "Traceback" not in output and "no space left on device while writing" in output, output
    assert Registry(ws.registry_path).list_models() == []
    assert [p.name for p in (ws.root / "models").iterdir()] == []
    assert audit.entries(ws)[-1]["action"] == "models.import.failed"


# ----------------------------------------------------------------------- torn registry writes
_WRITER = """
import sys
from pathlib import Path
from engine.registry import Registry
from engine.serve.usage import UsageStore

path, mode = sys.argv[1], sys.argv[2]
reg = Registry(path)
if mode == "wal":  # what a served workspace has: WAL mode, a gateway's writer connection open
    usage = UsageStore(path)
    usage.record("acme", "support", prompt_tokens=1)
i = 0
while True:
    i += 1
    reg.put_dataset("acme", "ds", i, Path(f"/nowhere/v{i}"), f"{i:064x}", {"train": i, "i": i},
                    "2026-01-01T00:00:00")
    reg.put_run(f"run-{i:05d}", "acme", "sft", "tiny", f"ds@v{i}", Path(f"/nowhere/run-{i}"))
    reg.finish_run(f"run-{i:05d}", "succeeded", {"i": i, "steps": 2 * i})
    print(i, flush=True)
"""


def _write_until_killed(path: Path, mode: str, after: int) -> int:
    """A process registering datasets and runs in a loop, SIGKILLed once it reported `after`
    rounds (it goes on writing while the report is read: the kill lands anywhere)."""
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), mode], text=True,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        done = 0
        while done < after:
            line = child.stdout.readline()
            assert line, "the writer died"
            done = int(line)
    finally:
        child.kill()
        child.wait()
    return done


def _whole_rows(path: Path, at_least: int) -> int:
    """The registry opens, passes integrity_check, and holds rounds 1..k complete (k >= at_least):
    every dataset row whole, every run of a registered round either whole-running or whole-
    succeeded, nothing beyond round k+1 — never half a row."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    reg = Registry(path)
    datasets = reg.list_datasets("acme")
    k = len(datasets)
    assert k >= at_least
    for v, row in enumerate(datasets, start=1):
        assert (row["version"], row["sha256"], row["path"]) == (v, f"{v:064x}", f"/nowhere/v{v}")
        assert row["counts"] == {"train": v, "i": v} and row["created_at"]
    runs = reg.list_runs("acme")
    assert [r["run_id"] for r in runs] == [f"run-{i:05d}" for i in range(1, len(runs) + 1)]
    assert len(runs) in (k - 1, k)  # the last round may have stopped between its two inserts
    for i, r in enumerate(runs, start=1):
        assert r["dataset"] == f"ds@v{i}" and r["created_at"]
        if r["status"] == "succeeded":
            assert r["metrics"] == {"i": i, "steps": 2 * i} and r["finished_at"]
        else:  # only the very last run can have been cut before its finish
            assert (i, r["status"], r["metrics"], r["finished_at"]) == (len(runs), "running", None, None)
    return k


def _next_command_works(ws: Workspace, k: int) -> None:
    res = studio("--workspace", str(ws.root), "datasets", "list", "--tenant", "acme", "--json",
                 cwd=ws.root)
    assert res.returncode == 0, res.stderr
    assert [r["version"] for r in json.loads(res.stdout)] == list(range(1, k + 1))
    Registry(ws.registry_path).put_dataset("acme", "ds", k + 1, Path("/nowhere"), "0" * 64, {}, "x")
    assert Registry(ws.registry_path).get_dataset("acme", "ds")["version"] == k + 1


@pytest.mark.parametrize("mode", ["rollback", "wal"])
def test_sigkill_in_the_middle_of_registry_writes(tmp_path: Path, mode: str) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    after = random.Random(f"{SEED}:registry-{mode}").randint(20, 80)
    print(f"fault seed {SEED}: SIGKILL after {after} rounds (replay with STUDIO_FAULT_SEED={SEED})")
    reported = _write_until_killed(ws.registry_path, mode, after)
    k = _whole_rows(ws.registry_path, at_least=reported)
    _next_command_works(ws, k)


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_torn_write_ahead_log(tmp_path: Path, damage: str) -> None:
    """The -wal file of a killed writer cut short or with flipped bytes: SQLite keeps the
    transactions whose frames are whole and checksummed and drops the rest — whole rounds only."""
    ws = Workspace(tmp_path / "ws").ensure()
    _write_until_killed(ws.registry_path, "wal", 40)
    wal = Path(f"{ws.registry_path}-wal")
    data = bytearray(wal.read_bytes())
    assert len(data) > 32 + 10 * 4096  # the killed writer's rounds are in the log, not checkpointed
    rng = random.Random(f"{SEED}:wal-{damage}")
    cut = rng.randint(32, len(data) - 1)
    print(f"fault seed {SEED}: {damage} the {len(data)}-byte WAL at {cut}")
    if damage == "truncated":
        del data[cut:]
    else:
        for at in range(cut, min(cut + 64, len(data))):
            data[at] ^= 0xFF
    wal.write_bytes(bytes(data))
    k = _whole_rows(ws.registry_path, at_least=0)
    _next_command_works(ws, k)


def test_a_damaged_registry_is_one_clear_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    reg = Registry(ws.registry_path)
    reg.put_dataset("acme", "ds", 1, Path("/nowhere"), "0" * 64, {}, "x")
    data = bytearray(ws.registry_path.read_bytes())
    data[:16] = b"not a database!!"  # the header SQLite recognises its files by
    ws.registry_path.write_bytes(bytes(data))
    code, output = _cli(capsys, "--workspace", str(ws.root), "datasets", "list", "--tenant", "acme")
    assert code == 2, output
    assert "Traceback" not in output and "the registry cannot be read" in output, output
    assert str(ws.registry_path) in output.replace("\n", "")
