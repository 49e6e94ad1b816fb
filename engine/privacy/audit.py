"""Tamper-evident audit log: append-only, hash-chained JSONL at <workspace>/audit/audit.jsonl,
with a signed head and recovery from interrupted appends.

One JSON object per line: {"seq", "ts", "actor", "action", "tenant", "ids", "hashes", "prev",
"hash"}. `hash` is the sha256 of the canonical JSON (sorted keys, compact separators) of the entry
without "hash"; `prev` is the previous entry's hash (64 zeros for the first). Entries carry ids,
hashes and counts only — never customer content.

Appends take an exclusive lock (fcntl) on audit/audit.lock. Each append first writes
audit/head.json — signed with the workspace's audit key, holding the new entry in full
(engine/privacy/audit_head.py) — then appends the whole line and fsyncs it. record() repairs what
an interrupted append leaves, and writes what it found into the chain:

- a torn last line (disk full, kill -9) is moved to audit/quarantine/, and an `audit.torn_tail`
  entry names its size and sha256;
- a head one entry ahead of the log (the append never happened, or that entry was removed): the
  entry the head holds is appended again — nothing being recorded is lost;
- a head that does not match the log otherwise (entries dropped or added outside record(), head
  missing, rewritten or signed by another key): an `audit.head_mismatch` entry says what was found
  and the chain goes on; verify() fails on that entry from then on, so the evidence stays;
- an unsigned head in a workspace that never had a signed one (written by a version before
  signed heads): an `audit.head_unsigned` entry, once; anywhere else an unsigned head is a
  mismatch.

verify() tells an intact log, a recoverable one (an interrupted append: not ok, but nothing lost,
repaired by the next record()) and a tampered one apart, naming the first problem.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.atomic import atomic_write, fsync_dir
from engine.workspace import Workspace

GENESIS = "0" * 64
FIELDS = ("seq", "ts", "actor", "action", "tenant", "ids", "hashes", "prev", "hash")
TORN_TAIL, HEAD_MISMATCH, HEAD_UNSIGNED = "audit.torn_tail", "audit.head_mismatch", "audit.head_unsigned"
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


def quarantine_dir(ws: Workspace) -> Path:
    return audit_dir(ws) / "quarantine"


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return f"uid:{os.getuid()}"


def _signing() -> ModuleType:
    from engine.privacy import audit_head  # lazy: CLI start-up time (cryptography)

    return audit_head


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
def _locked(ws: Workspace, shared: bool = False) -> Iterator[None]:
    d = audit_dir(ws)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(d / "audit.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _entry(raw: bytes) -> dict[str, Any] | None:
    """A line as an entry with the audit fields (its hash not checked), else None."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or set(entry) != set(FIELDS) or \
            not isinstance(entry["seq"], int) or not isinstance(entry["hash"], str):
        return None
    return entry


def _sound(entry: Any) -> bool:
    """A well-formed entry whose hash matches its content."""
    return isinstance(entry, dict) and _entry(canonical(entry)) is not None \
        and entry_hash(entry) == entry["hash"]


@dataclass
class _Tail:
    end: int                    # bytes up to and including the last newline
    torn: bytes                 # what follows it: an interrupted append (or garbage)
    last: dict[str, Any] | None  # the last complete line as an entry (None: none, or not an entry)


def _tail(path: Path) -> _Tail:
    """The end of the log, read backwards (the log only grows; this reads a few KiB)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return _Tail(0, b"", None)
    with f:
        pos = f.seek(0, os.SEEK_END)
        buf = b""
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            i = buf.rfind(b"\n")
            if i >= 0 and buf.rfind(b"\n", 0, i) >= 0:
                break
    i = buf.rfind(b"\n")
    if i < 0:
        return _Tail(0, buf, None)
    start = buf.rfind(b"\n", 0, i) + 1
    return _Tail(pos + i + 1, buf[i + 1:], _entry(buf[start:i]))


def _last_entry(path: Path, end: int) -> dict[str, Any] | None:
    """The last line before `end` that is an entry (only when the very last one is not)."""
    with open(path, "rb") as f:
        lines = f.read(end).splitlines()
    return next((e for e in map(_entry, reversed(lines)) if e is not None), None)


def _append_line(path: Path, data: bytes) -> None:
    """All of `data` at the end of the log, fsync'ed (a short write continues; an error leaves
    a torn line that the next record() moves aside)."""
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)


def _new(base: dict[str, Any] | None, action: str, tenant: str | None, actor: str,
         ids: dict[str, Any], hashes: dict[str, Any]) -> dict[str, Any]:
    seq, prev = (int(base["seq"]) + 1, str(base["hash"])) if base else (1, GENESIS)
    entry: dict[str, Any] = {
        "seq": seq, "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "actor": actor, "action": action, "tenant": tenant, "ids": ids, "hashes": hashes,
        "prev": prev,
    }
    entry["hash"] = entry_hash(entry)
    return entry


def _append(ws: Workspace, signing: ModuleType, entry: dict[str, Any]) -> dict[str, Any]:
    signing.write(head_path(ws), ws, entry)  # write-ahead: the signed head holds the entry first
    _append_line(log_path(ws), canonical(entry) + b"\n")
    return entry


def _quarantine(ws: Workspace, tail: _Tail, after: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Move the torn tail into audit/quarantine/ and cut it off the log; (ids, hashes) for the
    entry that records it."""
    digest = hashlib.sha256(tail.torn).hexdigest()
    qdir = quarantine_dir(ws)
    qdir.mkdir(exist_ok=True, mode=0o700)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"torn-after-seq{after}-{stamp}-{digest[:12]}.bin"
    with atomic_write(qdir / name) as f:
        f.write(tail.torn)
    fd = os.open(log_path(ws), os.O_WRONLY)
    try:
        os.ftruncate(fd, tail.end)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"bytes": len(tail.torn), "file": name, "after_seq": after}, {"torn": digest}


def _pending(head: Any, base: dict[str, Any] | None) -> bool:
    """The head names the entry right after the log's last one, and holds it in full."""
    entry = head.entry
    return head.state == "valid" and _sound(entry) and \
        entry["seq"] == (int(base["seq"]) if base else 0) + 1 and \
        entry["prev"] == (base["hash"] if base else GENESIS)


def _has_action(path: Path, action: str) -> bool:
    needle = f'"action":{json.dumps(action)}'.encode()
    return path.exists() and any((e := _entry(raw)) is not None and e["action"] == action
                                 for raw in path.read_bytes().splitlines() if needle in raw)


def _repair(ws: Workspace, signing: ModuleType) -> dict[str, Any] | None:
    """Bring the log and its head back in step (see the module docstring); the entry to chain
    the next one from (None: an empty log)."""
    path = log_path(ws)
    tail = _tail(path)
    base = tail.last if tail.last is not None or tail.end == 0 else _last_entry(path, tail.end)
    base_seq = int(base["seq"]) if base else 0
    markers: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    if tail.torn:
        markers.append((TORN_TAIL, *_quarantine(ws, tail, base_seq)))
    head = signing.read(head_path(ws), ws)
    if head.state == "valid" and base is not None and (head.seq, head.hash) == (base["seq"], base["hash"]):
        pass
    elif _pending(head, base):
        _append_line(path, canonical(head.entry) + b"\n")  # restore what the head holds
        base = head.entry
    elif head.state == "missing" and base is None and tail.end == 0:
        pass  # a new log
    elif head.state == "unsigned" and not signing.signed_before(ws) \
            and not _has_action(path, HEAD_UNSIGNED):
        markers.append((HEAD_UNSIGNED, {"head_seq": head.seq, "log_seq": base_seq,
                                        "head_matches": base is not None and head.hash == base["hash"]}, {}))
    else:
        if head.state == "valid":
            problem = ("truncated" if head.seq > base_seq else
                       "entries_after_head" if head.seq < base_seq else "diverged")
        else:
            problem = {"missing": "head_missing", "unreadable": "head_unreadable",
                       "unsigned": "head_unsigned_again"}.get(head.state, "head_signature")
        markers.append((HEAD_MISMATCH, {"problem": problem, "head_seq": head.seq,
                                        "log_seq": base_seq, "why": head.why}, {}))
    for action, ids, hashes in markers:
        base = _append(ws, signing, _new(base, action, None, os_user(), ids, hashes))
    return base


def record(ws: Workspace, action: str, *, tenant: str | None = None, actor: str | None = None,
           ids: dict[str, Any] | None = None, hashes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append one entry (atomic across processes, after repairing an interrupted append) and
    return it."""
    ids_, hashes_ = _flat(ids, "ids"), _flat(hashes, "hashes")
    signing = _signing()
    with _locked(ws):
        base = _repair(ws, signing)
        return _append(ws, signing, _new(base, action, tenant, actor or os_user(), ids_, hashes_))


def head(ws: Workspace) -> dict[str, Any]:
    """{"seq", "hash"} of the last complete entry ({0, GENESIS} for an empty log)."""
    path = log_path(ws)
    tail = _tail(path)
    last = tail.last if tail.last is not None or tail.end == 0 else _last_entry(path, tail.end)
    if last is None:
        return {"seq": 0, "hash": GENESIS}
    return {"seq": last["seq"], "hash": last["hash"]}


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    head: str
    bad_seq: int | None = None
    line: int | None = None
    reason: str | None = None
    recoverable: bool = False  # not ok, yet nothing is lost: the next record() repairs it
    notes: list[str] = field(default_factory=list)  # repairs the chain itself records
    key: str | None = None  # the fingerprint of the key the head was checked against

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "head": self.head, "bad_seq": self.bad_seq,
                "line": self.line, "reason": self.reason, "recoverable": self.recoverable,
                "notes": list(self.notes), "key": self.key}


def _note(entry: dict[str, Any]) -> str:
    ids = entry["ids"]
    if entry["action"] == TORN_TAIL:
        return (f"seq {entry['seq']}: an interrupted append ({ids.get('bytes')} bytes after seq "
                f"{ids.get('after_seq')}, sha256 {str(entry['hashes'].get('torn'))[:12]}) was moved "
                f"to audit/quarantine/{ids.get('file')}")
    return (f"seq {entry['seq']}: audit/head.json was found unsigned (naming seq "
            f"{ids.get('head_seq')}; written by a version before signed heads, or rewritten): "
            "the entries before this one are covered by the hash chain, not by a signature")


def verify(ws: Workspace, expected_head: str | None = None,
           public_key_pem: str | None = None) -> VerifyResult:
    """Check the whole chain and the signed head; report the first problem (its seq, line, why).

    Tampering (not ok): an edited entry (hash mismatch), a deleted/inserted/reordered entry (seq or
    prev mismatch), a truncated tail or entries added after the head (the head, signed with the
    audit key — or `public_key_pem` — names another entry), a missing, unsigned or wrongly signed
    head, an `audit.head_mismatch` entry (a problem record() found earlier), and a log that does
    not end with `expected_head` (anchored elsewhere). Recoverable (not ok, `recoverable`): a torn
    last line and/or a head one entry ahead that holds that entry — an interrupted append.
    """
    signing = _signing()
    key, key_name = signing.checking_key(ws, public_key_pem)
    path = log_path(ws)
    data, head_state = b"", signing.Head("missing")
    if audit_dir(ws).is_dir():
        with _locked(ws, shared=True):  # a snapshot: no append between reading log and head
            data = path.read_bytes() if path.exists() else b""
            head_state = signing.read(head_path(ws), ws, key)
    end = data.rfind(b"\n") + 1
    complete, torn = data[:end], data[end:]
    prev, expect_seq, n = GENESIS, 1, 0
    notes: list[str] = []
    fingerprint = key_name if key is not None else None

    def result(ok: bool, seq: int | None = None, line: int | None = None, why: str | None = None,
               recoverable: bool = False) -> VerifyResult:
        return VerifyResult(ok, n, prev, bad_seq=seq, line=line, reason=why,
                            recoverable=recoverable, notes=notes, key=fingerprint)

    unsigned_at: int | None = None
    mismatch: tuple[int, int, dict[str, Any]] | None = None
    for lineno, raw in enumerate(complete.splitlines(), start=1):
        try:
            entry = json.loads(raw)
        except ValueError:
            return result(False, expect_seq, lineno, "line is not valid JSON")
        if not isinstance(entry, dict) or set(entry) != set(FIELDS):
            return result(False, expect_seq, lineno, "entry does not have exactly the audit fields")
        seq = entry["seq"]
        if entry_hash(entry) != entry["hash"]:
            return result(False, seq, lineno, "entry was modified (its hash does not match its content)")
        if seq != expect_seq:
            why = ("an entry before it is missing" if isinstance(seq, int) and seq > expect_seq
                   else "entry is out of order or duplicated")
            return result(False, seq, lineno, f"expected seq {expect_seq}, found {seq}: {why}")
        if entry["prev"] != prev:
            return result(False, seq, lineno, "chain broken: prev does not match the previous entry's hash")
        if entry["action"] == HEAD_MISMATCH and mismatch is None:
            mismatch = (seq, lineno, entry["ids"])
        elif entry["action"] == HEAD_UNSIGNED:
            if unsigned_at is not None and mismatch is None:
                mismatch = (seq, lineno, {"problem": "head_unsigned_again", "head_seq": None})
            unsigned_at = unsigned_at or seq
            notes.append(_note(entry))
        elif entry["action"] == TORN_TAIL:
            notes.append(_note(entry))
        prev, expect_seq, n = entry["hash"], expect_seq + 1, n + 1
    if mismatch is not None:
        seq, lineno, ids = mismatch
        return result(False, seq, lineno,
                      f"seq {seq} records that the log did not match its signed head "
                      f"({ids.get('problem')}: the head named seq {ids.get('head_seq')}, the log "
                      f"ended at seq {ids.get('log_seq')}): entries were removed, added or "
                      "rewritten before it, or the head was")
    h = head_state
    torn_note = (f"{len(torn)} bytes after seq {n} are not a complete entry (an interrupted "
                 "append); the next record moves them to audit/quarantine/") if torn else None
    if h.state == "missing":
        if n:
            return result(False, None, None, "audit/head.json is missing")
        if torn_note:
            return result(False, None, n + 1, torn_note, recoverable=True)
    elif h.state in ("unreadable", "bad"):
        return result(False, None, None, h.why)
    elif h.state == "unsigned":
        if unsigned_at is not None or signing.signed_before(ws):
            return result(False, None, None, "audit/head.json is not signed, but this "
                                             "workspace's heads have been signed: rewritten")
        return result(False, None, None,
                      f"audit/head.json is not signed (it names seq {h.seq}, the log ends at seq "
                      f"{n}): written by a version before signed heads, or rewritten without the "
                      "key; the next record signs it and notes this in the log")
    elif (h.seq, h.hash) == (n, prev) if n else False:
        if torn_note:
            return result(False, None, n + 1, torn_note, recoverable=True)
    elif _pending(h, {"seq": n, "hash": prev} if n else None):
        line = canonical(h.entry) + b"\n"
        what = (f"the log ends one entry before its signed head: seq {h.seq} ({h.entry['action']}) "
                "was being appended when the append was interrupted (or it was removed); the head "
                "holds it in full and the next record restores it")
        if torn:
            what += (f"; the {len(torn)} bytes after seq {n} are "
                     + ("the start of that entry" if line.startswith(torn) else "not that entry")
                     + " and are moved to audit/quarantine/")
        return result(False, h.seq, n + 1, what, recoverable=True)
    elif h.seq > n:
        return result(False, n + 1, None, f"log truncated: the signed head names seq {h.seq} but "
                                          f"the log ends at seq {n}")
    elif h.seq < n:
        return result(False, h.seq + 1, h.seq + 1,
                      f"the log has entries after its signed head (seq {h.seq + 1}–{n}) that were "
                      "not written by record()")
    else:
        return result(False, None, None, f"the log does not end with the entry its signed head "
                                         f"names (seq {h.seq}, {str(h.hash)[:12]})")
    if expected_head and expected_head != prev:
        return result(False, None, None, f"the log does not end with the expected head "
                                         f"({expected_head[:12]})")
    return result(True)


def entries(ws: Workspace, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every complete, readable entry (optionally one tenant's); a torn last line is not one."""
    path = log_path(ws)
    if not path.exists():
        return []
    data = path.read_bytes()
    out = []
    for raw in data[: data.rfind(b"\n") + 1].splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and (tenant is None or entry.get("tenant") == tenant):
            out.append(entry)
    return out
