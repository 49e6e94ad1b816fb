"""The signed head of the audit log (audit/head.json): which entry the log must end with, signed
with the workspace's audit key so that nobody without that key can move it.

    {"format": 2, "workspace_id", "seq", "hash", "entry", "key", "signature"}

`entry` is the named entry in full, `key` the signer's fingerprint (engine/privacy/keys.py; the
private key lives outside the workspace) and `signature` Ed25519 over the canonical JSON of the
rest. engine/privacy/audit.py writes the head BEFORE it appends the entry (write-ahead): a crash
or a full disk between the two leaves a head one entry ahead of the log that holds the missing
entry in full, so nothing that was being recorded is lost and the next record() restores it.
Dropping entries and rewriting the head needs the private key. Replacing it with an unsigned head
(the format before signed heads) is caught by a note kept outside the workspace, next to the key:
`audit-heads/<sha256 of the workspace path>`, written with the first signed head, says that this
workspace's heads are signed, so only a workspace that never had one may show an unsigned head.
What a head cannot tell: a whole
audit directory put back from an older copy (log and head together) — anchor the head elsewhere
for that (`studio audit head`, `verify --expected-head`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from engine.atomic import write_text_atomic
from engine.errors import StudioError
from engine.hashing import canonical_json
from engine.privacy import keys
from engine.workspace import Workspace

FORMAT = 2
HEAD_FIELDS = ("format", "workspace_id", "seq", "hash", "entry", "key", "signature")


@dataclass
class Head:
    """What head.json says. state: "missing", "unreadable" (not a head), "unsigned" (a head of an
    older version, or one rewritten without the key), "bad" (signature, key or workspace do not
    match; `why` says which) or "valid"."""

    state: str
    seq: int | None = None
    hash: str | None = None
    entry: dict[str, Any] | None = None
    key: str | None = None
    why: str | None = None


def checking_key(ws: Workspace, pem: str | None = None) -> tuple[Ed25519PublicKey | None, str]:
    """The key heads are checked against and its fingerprint — or (None, why there is none).
    A PEM that is not an Ed25519 public key is a StudioError."""
    if pem is not None:
        key, _ = keys.audit_public_key(ws, pem)
        return key, keys.fingerprint(key)
    try:
        key, _ = keys.audit_public_key(ws)
    except StudioError as exc:
        return None, exc.what
    return key, keys.fingerprint(key)


def _signed_bytes(body: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in body.items() if k != "signature"}).encode("utf-8")


def _era_path(ws: Workspace) -> Path:
    root = str(Path(ws.root).resolve()).encode("utf-8")
    return keys.config_dir() / "audit-heads" / hashlib.sha256(root).hexdigest()[:32]


def signed_before(ws: Workspace) -> bool:
    """Whether a signed head was ever written for this workspace (by this installation)."""
    return _era_path(ws).exists()


def _note_era(ws: Workspace) -> None:
    path = _era_path(ws)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"audit heads of this workspace are signed\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: Path, ws: Workspace, entry: dict[str, Any]) -> None:
    """Sign and (atomically, durably) write the head naming `entry`; creates the key on first use."""
    key = keys.signing_key(ws)
    _note_era(ws)
    body: dict[str, Any] = {"format": FORMAT, "workspace_id": keys.workspace_id(ws),
                            "seq": entry["seq"], "hash": entry["hash"], "entry": entry,
                            "key": keys.fingerprint(key)}
    body["signature"] = base64.b64encode(key.sign(_signed_bytes(body))).decode("ascii")
    write_text_atomic(path, json.dumps(body, sort_keys=True))


def read(path: Path, ws: Workspace, public_key: Ed25519PublicKey | None = None) -> Head:
    """Load and check head.json against `public_key` (default: the workspace's audit key)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Head("missing")
    except (OSError, ValueError):
        return Head("unreadable", why="audit/head.json is not valid JSON")
    if not isinstance(data, dict) or not isinstance(data.get("seq"), int) \
            or not isinstance(data.get("hash"), str):
        return Head("unreadable", why="audit/head.json does not name a seq and a hash")
    seq, digest = data["seq"], data["hash"]
    if "signature" not in data:
        return Head("unsigned", seq, digest)
    if set(data) != set(HEAD_FIELDS) or data["format"] != FORMAT or not isinstance(data["entry"], dict):
        return Head("bad", seq, digest, why="audit/head.json has fields of no known format")
    entry, signer = data["entry"], str(data["key"])
    if public_key is None:
        try:
            public_key, _ = keys.audit_public_key(ws)
        except StudioError as exc:
            return Head("bad", seq, digest, entry, signer,
                        why=f"its signature cannot be checked: {exc.what}")
    expected = keys.fingerprint(public_key)
    if signer != expected:
        return Head("bad", seq, digest, entry, signer,
                    why=f"audit/head.json is signed by key {signer}, not by the audit key {expected}")
    try:
        public_key.verify(base64.b64decode(data["signature"], validate=True), _signed_bytes(data))
    except (InvalidSignature, ValueError, binascii.Error, TypeError):
        return Head("bad", seq, digest, entry, signer,
                    why="the signature of audit/head.json does not match (rewritten without the key)")
    try:
        ours = keys.workspace_id(ws, create=False)
    except StudioError:
        ours = None
    if data["workspace_id"] != ours:
        return Head("bad", seq, digest, entry, signer,
                    why="audit/head.json was signed for another workspace (copied from elsewhere)")
    if entry.get("seq") != seq or entry.get("hash") != digest:
        return Head("bad", seq, digest, entry, signer, why="audit/head.json is inconsistent")
    return Head("valid", seq, digest, entry, signer)
