"""Audit log: exact entry format, hash chain, concurrent appends, and every kind of tampering."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

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
    ("truncate", 4, "truncated"),  # two entries dropped, head.json left alone
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
        lines = lines[:3]
    elif tamper == "rechain":  # edit AND recompute its own hash: the next entry's prev breaks
        e = json.loads(lines[1])
        e["actor"] = "mallory"
        e["hash"] = audit.entry_hash(e)
        lines[1] = audit.canonical(e)
    _write(workspace, lines)
    res = audit.verify(workspace)
    assert not res.ok and not res.recoverable
    assert res.bad_seq == bad_seq, res
    assert words in res.reason


def test_head_is_signed_by_the_workspace_audit_key(workspace: Workspace) -> None:
    from engine.privacy import keys

    _fill(workspace, 2)
    head = json.loads(audit.head_path(workspace).read_text())
    assert head["seq"] == 2 and head["entry"]["seq"] == 2 and head["signature"]
    key = keys.signing_key(workspace, create=False)
    assert head["key"] == keys.fingerprint(key)
    res = audit.verify(workspace)
    assert res.ok and res.key == keys.fingerprint(key)
    res = audit.verify(workspace, public_key_pem=keys.public_pem(key))
    assert res.ok


def _resign(ws: Workspace, body: dict, key: object) -> None:
    """What an attacker with their own Ed25519 key can write (not the workspace's key)."""
    import base64

    from engine.hashing import canonical_json
    from engine.privacy import keys

    body = dict(body, key=keys.fingerprint(key))
    body.pop("signature", None)
    body["signature"] = base64.b64encode(key.sign(canonical_json(body).encode())).decode()
    audit.head_path(ws).write_text(json.dumps(body))


@pytest.mark.parametrize("rewrite", ["unsigned", "own_key", "same_key_id_bad_signature"])
def test_truncation_with_a_rewritten_head_fails_without_the_key(workspace: Workspace,
                                                                rewrite: str) -> None:
    """Red team: drop the last entries and rewrite head.json to match — verify must fail."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from engine.privacy import keys

    _fill(workspace, 5)
    lines = _lines(workspace)[:3]
    _write(workspace, lines)
    last = json.loads(lines[-1])
    if rewrite == "unsigned":  # the format before signed heads
        audit.head_path(workspace).write_text(json.dumps({"seq": 3, "hash": last["hash"]}))
        words = "not signed"
    else:
        body = json.loads(audit.head_path(workspace).read_text())
        body.update(seq=3, hash=last["hash"], entry=last)
        _resign(workspace, body, Ed25519PrivateKey.generate())
        words = "signed by key"
        if rewrite == "same_key_id_bad_signature":  # claims the workspace key's fingerprint
            forged = json.loads(audit.head_path(workspace).read_text())
            forged["key"] = keys.fingerprint(keys.signing_key(workspace, create=False))
            audit.head_path(workspace).write_text(json.dumps(forged))
            words = "signature of audit/head.json does not match"
    res = audit.verify(workspace)
    assert not res.ok and not res.recoverable and words in res.reason, res
    # the next record works, and the chain records what it found: verify keeps failing on it
    audit.record(workspace, "refine", tenant="acme")
    res = audit.verify(workspace)
    assert not res.ok and res.bad_seq == 4 and "did not match its signed head" in res.reason
    marker = audit.entries(workspace)[3]
    assert marker["action"] == audit.HEAD_MISMATCH and marker["ids"]["log_seq"] == 3


def test_expected_head_catches_a_rolled_back_audit_directory(workspace: Workspace,
                                                             tmp_path: Path) -> None:
    """Log and signed head copied away and put back later agree with each other: only a head
    anchored elsewhere tells (a documented limit)."""
    import shutil

    _fill(workspace, 3)
    shutil.copytree(audit.audit_dir(workspace), tmp_path / "old-audit")
    _fill(workspace, 2)
    anchored = audit.head(workspace)["hash"]
    shutil.rmtree(audit.audit_dir(workspace))
    shutil.copytree(tmp_path / "old-audit", audit.audit_dir(workspace))
    assert audit.verify(workspace).ok
    res = audit.verify(workspace, expected_head=anchored)
    assert not res.ok and "expected head" in res.reason


def _legacy_log(ws: Workspace, n: int) -> list[dict]:
    """A log and unsigned head as a version before signed heads wrote them."""
    out, prev = [], audit.GENESIS
    for i in range(1, n + 1):
        e = {"seq": i, "ts": "2026-11-01T00:00:00.000+00:00", "actor": "alice", "action": "train",
             "tenant": "acme", "ids": {"i": i}, "hashes": {}, "prev": prev}
        e["hash"] = prev = audit.entry_hash(e)
        out.append(e)
    audit.audit_dir(ws).mkdir()
    _write(ws, [audit.canonical(e) for e in out])
    audit.head_path(ws).write_text(json.dumps({"seq": n, "hash": prev}))
    return out


def test_a_workspace_from_before_signed_heads_is_upgraded_once(workspace: Workspace) -> None:
    old = _legacy_log(workspace, 3)
    res = audit.verify(workspace)
    assert not res.ok and "not signed" in res.reason and "next record signs it" in res.reason
    audit.record(workspace, "refine", tenant="acme")
    res = audit.verify(workspace)
    assert res.ok and res.entries == 5 and len(res.notes) == 1 and "found unsigned" in res.notes[0]
    assert audit.entries(workspace)[:3] == old
    # from now on an unsigned head is a rewrite, not an upgrade
    lines = _lines(workspace)
    audit.head_path(workspace).write_text(json.dumps({"seq": 5, "hash": json.loads(lines[-1])["hash"]}))
    res = audit.verify(workspace)
    assert not res.ok and "have been signed" in res.reason
    audit.record(workspace, "refine", tenant="acme")
    res = audit.verify(workspace)
    assert not res.ok and res.bad_seq == 6 and "head_unsigned" in res.reason


def test_dropping_only_the_last_entry_is_undone_from_the_head(workspace: Workspace) -> None:
    _fill(workspace, 4)
    lines = _lines(workspace)
    _write(workspace, lines[:3])
    res = audit.verify(workspace)
    assert not res.ok and res.recoverable and res.bad_seq == 4 and "restores it" in res.reason
    audit.record(workspace, "refine", tenant="acme")
    assert _lines(workspace)[:4] == lines  # the dropped entry is back, byte for byte
    assert audit.verify(workspace).ok


def test_empty_log_verifies(workspace: Workspace) -> None:
    res = audit.verify(workspace)
    assert res.ok and res.entries == 0 and res.head == "0" * 64
