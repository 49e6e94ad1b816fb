"""Audit log: exact entry format, hash chain, concurrent appends, and every kind of tampering."""

from __future__ import annotations

import hashlib
import json
import multiprocessing

import pytest

from engine.privacy import audit
from engine.workspace import Workspace


def _lines(ws: Workspace) -> list[bytes]:
    return audit.log_path(ws).read_bytes().splitlines()


def _write(ws: Workspace, lines: list[bytes]) -> None:
    audit.log_path(ws).write_bytes(b"".join(line + b"\n" for line in lines))


def _fill(ws: Workspace, n: int = 5) -> None:
    for i in range(n):
        audit.record(ws, "train", tenant="acme", ids={"run_id": f"run-{i}", "steps": i},
                     hashes={"manifest": "ab" * 32})


def test_entry_format_and_chain(workspace: Workspace) -> None:
    first = audit.record(workspace, "refine", tenant="acme", actor="alice",
                         ids={"dataset": "d", "version": 1}, hashes={"dataset": "c" * 64})
    second = audit.record(workspace, "purge", tenant=None, ids={"n": 2})
    assert list(first) == list(audit.FIELDS)
    assert first["seq"] == 1 and first["prev"] == "0" * 64 and first["actor"] == "alice"
    assert second["seq"] == 2 and second["prev"] == first["hash"] and second["actor"] == audit.os_user()
    raw = _lines(workspace)[0]
    parsed = json.loads(raw)
    body = {k: v for k, v in parsed.items() if k != "hash"}
    expect = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert parsed["hash"] == expect
    assert raw == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    res = audit.verify(workspace)
    assert res.ok and res.entries == 2 and res.head == second["hash"]
    assert audit.head(workspace) == {"seq": 2, "hash": second["hash"]}


def test_content_is_refused(workspace: Workspace) -> None:
    with pytest.raises(TypeError):
        audit.record(workspace, "x", ids={"record": {"text": "customer said ..."}})


def _append_many(root: str, n: int) -> None:
    ws = Workspace(root)
    for i in range(n):
        audit.record(ws, "eval", tenant="t", ids={"i": i})


def test_concurrent_processes_keep_one_chain(workspace: Workspace) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(workspace.root), 15)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    res = audit.verify(workspace)
    assert res.ok and res.entries == 60
    assert [json.loads(x)["seq"] for x in _lines(workspace)] == list(range(1, 61))


@pytest.mark.parametrize("tamper, bad_seq, words", [
    ("edit", 3, "modified"),
    ("delete", 4, "missing"),
    ("insert", 2, "out of order"),  # a copy of entry 2 at line 3
    ("reorder", 4, "missing"),
    ("truncate", 5, "truncated"),
    ("torn", None, "incomplete"),
    ("rechain", 3, "chain broken"),
])
def test_tampering_is_detected(workspace: Workspace, tamper: str, bad_seq: int | None,
                               words: str) -> None:
    _fill(workspace, 5)
    lines = _lines(workspace)
    if tamper == "edit":  # change a value, keep the stored hash
        e = json.loads(lines[2])
        e["ids"]["steps"] = 99
        lines[2] = audit.canonical(e)
    elif tamper == "delete":
        del lines[2]
    elif tamper == "insert":
        lines.insert(2, lines[1])
    elif tamper == "reorder":
        lines[2], lines[3] = lines[3], lines[2]
    elif tamper == "truncate":
        lines = lines[:4]
    elif tamper == "rechain":  # edit AND recompute its own hash: the next entry's prev breaks
        e = json.loads(lines[1])
        e["actor"] = "mallory"
        e["hash"] = audit.entry_hash(e)
        lines[1] = audit.canonical(e)
    _write(workspace, lines)
    if tamper == "torn":
        audit.log_path(workspace).write_bytes(audit.log_path(workspace).read_bytes()[:-20])
    res = audit.verify(workspace)
    assert not res.ok
    assert res.bad_seq == bad_seq, res
    assert words in res.reason


def test_expected_head_catches_a_rewritten_head(workspace: Workspace) -> None:
    _fill(workspace, 3)
    anchored = audit.head(workspace)["hash"]
    lines = _lines(workspace)[:2]
    _write(workspace, lines)  # truncate AND fix head.json: only an external anchor can tell
    last = json.loads(lines[-1])
    audit.head_path(workspace).write_text(json.dumps({"seq": 2, "hash": last["hash"]}))
    assert audit.verify(workspace).ok
    res = audit.verify(workspace, expected_head=anchored)
    assert not res.ok and "expected head" in res.reason


def test_empty_log_verifies(workspace: Workspace) -> None:
    res = audit.verify(workspace)
    assert res.ok and res.entries == 0 and res.head == "0" * 64
