"""Fault injection on the audit log: a full disk in the middle of an append, kill -9 of a real
process that is recording, and a truncated log with a rewritten head.

After each fault: `verify` tells the truth (names the problem, and says whether it is an
interrupted append or tampering), the next `record()` works, and nothing half-written is ever
visible as an entry.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.privacy import audit
from engine.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The audit key of each test in its own config dir (children inherit it)."""
    d = tmp_path / "user-config"
    monkeypatch.setenv("STUDIO_CONFIG_DIR", str(d))
    monkeypatch.delenv("STUDIO_SIGNING_KEY", raising=False)
    return d


def _fill(ws: Workspace, n: int) -> None:
    for i in range(n):
        audit.record(ws, "train", tenant="acme", ids={"run_id": f"run-{i}"})


def _complete_and_sound(ws: Workspace) -> list[dict]:
    """Every line of the log is a whole, hash-valid entry, in one chain."""
    data = audit.log_path(ws).read_bytes()
    assert data.endswith(b"\n")
    rows = [json.loads(raw) for raw in data.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(audit.entry_hash(r) == r["hash"] for r in rows)
    assert audit.entries(ws) == rows
    return rows


def _cli_verify(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        main(["--workspace", str(ws.root), "audit", "verify"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    got = capsys.readouterr()
    return code, got.out + got.err


# ------------------------------------------------------------------------------- disk full (ENOSPC)
@pytest.mark.parametrize("written", ["none", "half", "all_but_newline"])
def test_disk_full_during_an_append(workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], written: str) -> None:
    _fill(workspace, 3)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        data = bytes(data)
        if data.startswith(b'{"action"') and data.endswith(b"\n"):  # an audit line
            keep = {"none": 0, "half": len(data) // 2, "all_but_newline": len(data) - 1}[written]
            if keep:
                real_write(fd, data[:keep])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError) as exc:
        audit.record(workspace, "ui.login", tenant="acme", ids={"key_id": "k1"})
    assert exc.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "write", real_write)

    # verify tells the truth: an interrupted append, nothing lost, not tampering
    res = audit.verify(workspace)
    assert not res.ok and res.recoverable, res
    assert res.entries == 3 and res.bad_seq == 4 and "interrupted" in res.reason
    if written != "none":
        assert "the start of that entry" in res.reason
    code, said = _cli_verify(workspace, capsys)
    assert code == 0 and "interrupted append" in said
    # the half-written line is not an entry anywhere
    assert [e["seq"] for e in audit.entries(workspace)] == [1, 2, 3]
    assert audit.head(workspace)["seq"] == 3

    # the next record works: the interrupted entry is completed from the signed head, the torn
    # bytes are kept aside and named in the chain
    entry = audit.record(workspace, "ui.login", tenant="acme", ids={"key_id": "k2"})
    rows = _complete_and_sound(workspace)
    assert rows[3]["action"] == "ui.login" and rows[3]["ids"] == {"key_id": "k1"}
    if written == "none":
        assert entry["seq"] == 5
    else:
        assert rows[4]["action"] == audit.TORN_TAIL and entry["seq"] == 6
        quarantined = audit.quarantine_dir(workspace) / rows[4]["ids"]["file"]
        assert (audit.canonical(rows[3]) + b"\n").startswith(quarantined.read_bytes())
    res = audit.verify(workspace)
    assert res.ok, res
    assert len(res.notes) == (0 if written == "none" else 1)
    code, said = _cli_verify(workspace, capsys)
    assert code == 0 and re.search(r"^ok \d+ entries", said, re.M), said


def test_a_torn_line_from_an_older_version_does_not_block_record(workspace: Workspace) -> None:
    """A torn tail with the head naming the last complete entry (garbage appended, or a crash of
    a version that wrote the head after the line): record() moves it aside and goes on."""
    _fill(workspace, 2)
    with open(audit.log_path(workspace), "ab") as f:
        f.write(b'{"action":"ui.login","actor":"key:ab')
    res = audit.verify(workspace)
    assert not res.ok and res.recoverable and "not a complete entry" in res.reason
    audit.record(workspace, "ui.login", tenant="acme")
    rows = _complete_and_sound(workspace)
    assert [r["action"] for r in rows] == ["train", "train", audit.TORN_TAIL, "ui.login"]
    assert audit.verify(workspace).ok


# -------------------------------------------------------------------------------- kill -9 mid-loop
CHILD = r"""
import os, sys, time
from pathlib import Path
from engine.privacy import audit
from engine.workspace import Workspace

ws, mode, flag = Workspace(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
real_write = os.write
count = 0

def paused_write(fd, data):
    # after 5 whole entries, stop inside the 6th append (at the moment `mode` names) and wait
    global count
    data = bytes(data)
    if not (data.startswith(b'{"action"') and data.endswith(b"\n")):
        return real_write(fd, data)
    count += 1
    if count <= 5 or mode == "free":
        return real_write(fd, data)
    cut = {"before": 0, "half": len(data) // 2, "after": len(data)}[mode]
    n = real_write(fd, data[:cut]) if cut else 0
    os.fsync(fd)
    flag.write_text("paused")
    time.sleep(120)
    return n + real_write(fd, data[cut:])

os.write = paused_write
for i in range(10 ** 6):
    audit.record(ws, "eval", tenant="acme", ids={"i": i})
"""


@pytest.mark.parametrize("mode", ["before", "half", "after", "free"])
def test_kill_9_while_recording(workspace: Workspace, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str], mode: str) -> None:
    """A real process appending in a loop is killed with SIGKILL: before its line is written
    (the signed head already names it), half-way through the line, right after it, or at an
    arbitrary moment."""
    flag = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(workspace.root), mode, str(flag)],
                            env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        if mode == "free":  # some entries in, then at whatever point the loop has reached
            while len(audit.entries(workspace)) < 20:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
        else:
            while not flag.exists():
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    res = audit.verify(workspace)
    assert res.ok or res.recoverable, res  # never reported as tampering
    if mode in ("before", "half"):
        assert res.recoverable and res.bad_seq == 6 and "interrupted" in res.reason
    if mode == "after":  # the head was written before the line: nothing to repair
        assert res.ok and res.entries == 6
    code, said = _cli_verify(workspace, capsys)
    assert code == 0, said
    before = audit.entries(workspace)
    assert all(audit.entry_hash(e) == e["hash"] for e in before)

    entry = audit.record(workspace, "refine", tenant="acme")
    rows = _complete_and_sound(workspace)
    assert rows[-1] == entry and rows[:len(before)] == before
    assert {r["action"] for r in rows[:-1]} <= {"eval", audit.TORN_TAIL}
    assert [r["ids"]["i"] for r in rows if r["action"] == "eval"] == \
        list(range(sum(r["action"] == "eval" for r in rows)))  # none lost, none twice
    assert audit.verify(workspace).ok


# ------------------------------------------------------------------ truncated log, rewritten head
@pytest.mark.parametrize("drop", [2, 5])
def test_truncated_log_with_a_rewritten_head(workspace: Workspace,
                                             capsys: pytest.CaptureFixture[str], drop: int) -> None:
    _fill(workspace, 8)
    path = audit.log_path(workspace)
    lines = path.read_bytes().splitlines()[:-drop]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    last = json.loads(lines[-1])
    audit.head_path(workspace).write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}))

    res = audit.verify(workspace)
    assert not res.ok and not res.recoverable and "not signed" in res.reason
    code, said = _cli_verify(workspace, capsys)
    assert code == 2 and "not signed" in said

    entry = audit.record(workspace, "ui.login", tenant="acme")  # still works
    rows = _complete_and_sound(workspace)
    marker = rows[-2]
    assert marker["action"] == audit.HEAD_MISMATCH and marker["ids"]["log_seq"] == 8 - drop
    assert rows[-1] == entry
    res = audit.verify(workspace)  # the evidence stays in the chain
    assert not res.ok and not res.recoverable and res.bad_seq == 9 - drop
    assert "did not match its signed head" in res.reason
    code, said = _cli_verify(workspace, capsys)
    assert code == 2 and "did not match its signed head" in said


def test_web_login_after_a_torn_line(workspace: Workspace) -> None:
    """The dashboard's login records an audit entry: a torn last line must not turn it into a 500."""
    from fastapi.testclient import TestClient

    from engine.serve.keys import KeyStore
    from engine.web.app import create_app

    _fill(workspace, 2)
    with open(audit.log_path(workspace), "ab") as f:
        f.write(b'{"action":"ui.login","actor":"key:')  # a login killed mid-append
    token, _ = KeyStore(workspace.registry_path).create("acme", "dash")
    with TestClient(create_app(workspace), raise_server_exceptions=False) as client:
        r = client.post("/login", data={"key": token}, headers={"Origin": "http://testserver"},
                        follow_redirects=False)
        assert r.status_code == 303
        assert "Hash chain verified" in client.get("/audit").text
    rows = _complete_and_sound(workspace)
    assert [r["action"] for r in rows] == ["train", "train", audit.TORN_TAIL, "ui.login"]
