"""Tamper-evident audit log: append-only, hash-chained JSONL at <workspace>/audit/audit.jsonl.

One JSON object per line: {"seq", "ts", "actor", "action", "tenant", "ids", "hashes", "prev",
"hash"}. `hash` is the sha256 of the canonical JSON (sorted keys, compact separators) of the entry
without "hash"; `prev` is the previous entry's hash (64 zeros for the first). Appends take an
exclusive lock (fcntl) on audit/audit.lock, are fsync'ed, and also rewrite audit/head.json
(seq + hash of the last entry) so a truncated tail is detected. Entries carry ids, hashes and
counts only — never customer content.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.atomic import write_text_atomic
from engine.workspace import Workspace

GENESIS = "0" * 64
FIELDS = ("seq", "ts", "actor", "action", "tenant", "ids", "hashes", "prev", "hash")
_SCALARS = (str, int, float, bool, type(None))


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def audit_dir(ws: Workspace) -> Path:
    return Path(ws.root) / "audit"


def log_path(ws: Workspace) -> Path:
    return audit_dir(ws) / "audit.jsonl"


def head_path(ws: Workspace) -> Path:
    return audit_dir(ws) / "head.json"


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return f"uid:{os.getuid()}"


def _flat(obj: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """ids/hashes hold scalars or lists of scalars only: no nested documents, no content."""
    out: dict[str, Any] = {}
    for key, value in (obj or {}).items():
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, _SCALARS) for v in value):
                raise TypeError(f"audit {what}[{key!r}] must be a scalar or a list of scalars")
            value = list(value)
        elif not isinstance(value, _SCALARS):
            raise TypeError(f"audit {what}[{key!r}] must be a scalar or a list of scalars")
        out[str(key)] = value
    return out


@contextmanager
def _locked(ws: Workspace) -> Iterator[None]:
    d = audit_dir(ws)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(d / "audit.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _last_line(path: Path) -> bytes | None:
    """The last complete line of the log (without newline), None when the log is empty."""
    if not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        pos, buf = end, b""
        while pos > 0:
            step = min(4096, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            stripped = buf.rstrip(b"\n")
            if b"\n" in stripped:
                return stripped.rsplit(b"\n", 1)[1]
        stripped = buf.rstrip(b"\n")
        return stripped or None


def _write_head(ws: Workspace, seq: int, digest: str) -> None:
    path = head_path(ws)
    write_text_atomic(path, json.dumps({"seq": seq, "hash": digest}))


def record(ws: Workspace, action: str, *, tenant: str | None = None, actor: str | None = None,
           ids: dict[str, Any] | None = None, hashes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append one entry (atomic across processes) and return it."""
    ids_, hashes_ = _flat(ids, "ids"), _flat(hashes, "hashes")
    path = log_path(ws)
    with _locked(ws):
        last = _last_line(path)
        if last is None:
            seq, prev = 1, GENESIS
        else:
            prior = json.loads(last)
            seq, prev = int(prior["seq"]) + 1, str(prior["hash"])
        entry: dict[str, Any] = {
            "seq": seq, "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "actor": actor or os_user(), "action": action, "tenant": tenant, "ids": ids_,
            "hashes": hashes_, "prev": prev,
        }
        entry["hash"] = entry_hash(entry)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, canonical(entry) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        _write_head(ws, seq, entry["hash"])
    return entry


def head(ws: Workspace) -> dict[str, Any]:
    """{"seq", "hash"} of the last entry ({0, GENESIS} for an empty log)."""
    last = _last_line(log_path(ws))
    if last is None:
        return {"seq": 0, "hash": GENESIS}
    entry = json.loads(last)
    return {"seq": entry["seq"], "hash": entry["hash"]}


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    head: str
    bad_seq: int | None = None
    line: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "head": self.head, "bad_seq": self.bad_seq,
                "line": self.line, "reason": self.reason}


def verify(ws: Workspace, expected_head: str | None = None) -> VerifyResult:
    """Check the whole chain; report the first bad entry (its seq, line and why).

    Detects an edited entry (hash mismatch), a deleted/inserted/reordered entry (seq or prev
    mismatch), a torn last line, and a truncated tail (head.json, or `expected_head` anchored
    elsewhere, names an entry the log no longer ends with).
    """
    path = log_path(ws)
    prev, expect_seq, n = GENESIS, 1, 0

    def fail(seq: int | None, line: int | None, why: str) -> VerifyResult:
        return VerifyResult(False, n, prev, bad_seq=seq, line=line, reason=why)

    data = path.read_bytes() if path.exists() else b""
    if data and not data.endswith(b"\n"):
        lines_all = data.split(b"\n")
        torn = len(lines_all)
        return fail(None, torn, "the last line is incomplete (torn write or truncation)")
    for lineno, raw in enumerate(data.splitlines(), start=1):
        try:
            entry = json.loads(raw)
        except ValueError:
            return fail(expect_seq, lineno, "line is not valid JSON")
        if not isinstance(entry, dict) or set(entry) != set(FIELDS):
            return fail(expect_seq, lineno, "entry does not have exactly the audit fields")
        seq = entry["seq"]
        if entry_hash(entry) != entry["hash"]:
            return fail(seq, lineno, "entry was modified (its hash does not match its content)")
        if seq != expect_seq:
            why = ("an entry before it is missing" if isinstance(seq, int) and seq > expect_seq
                   else "entry is out of order or duplicated")
            return fail(seq, lineno, f"expected seq {expect_seq}, found {seq}: {why}")
        if entry["prev"] != prev:
            return fail(seq, lineno, "chain broken: prev does not match the previous entry's hash")
        prev, expect_seq, n = entry["hash"], expect_seq + 1, n + 1
    anchors: list[tuple[str, dict[str, Any]]] = []
    if head_path(ws).exists():
        try:
            anchors.append(("head.json", json.loads(head_path(ws).read_text())))
        except ValueError:
            return fail(None, None, "audit/head.json is unreadable")
    if expected_head:
        anchors.append(("the expected head", {"hash": expected_head}))
    elif n and not head_path(ws).exists():
        return fail(None, None, "audit/head.json is missing")
    for name, anchor in anchors:
        if anchor.get("hash") != prev:
            seq = anchor.get("seq")
            if isinstance(seq, int) and seq > n:
                return fail(n + 1, None, f"log truncated: {name} names seq {seq} but the log "
                                         f"ends at seq {n}")
            return fail(None, None, f"the log does not end with {name} ({str(anchor.get('hash'))[:12]})")
    return VerifyResult(True, n, prev)


def entries(ws: Workspace, tenant: str | None = None) -> list[dict[str, Any]]:
    path = log_path(ws)
    if not path.exists():
        return []
    out = []
    for raw in path.read_bytes().splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if tenant is None or entry.get("tenant") == tenant:
            out.append(entry)
    return out
