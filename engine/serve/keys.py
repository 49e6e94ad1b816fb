"""API keys: per-tenant bearer keys (and admin keys), stored only as SHA-256 hashes in the registry.

A key looks like `sk-studio-<key_id>-<secret>`: `key_id` (8 hex characters) is public and names the
key in listings and the audit log; the secret (32 random bytes, URL-safe base64) is shown once, at
creation, and never stored. Keys are 256-bit random tokens, so a plain SHA-256 is a sufficient hash
(no password-stretching is needed); verification compares digests in constant time.

Roles: `tenant` keys see and call only their tenant's models and pages; `admin` keys manage keys and
adapters. The gateway (engine/serve/gateway.py) and the web dashboard (engine/web/) authenticate
with `authenticate`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import NotFound, StudioError
from engine.registry import connect, now_iso
from engine.workspace import check_name

PREFIX = "sk-studio-"
ROLES = ("tenant", "admin")
_KEY_RE = re.compile(r"^sk-studio-([0-9a-f]{8})-([A-Za-z0-9_-]{20,})$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL,
    sha256 TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT
);
"""


@dataclass(frozen=True)
class KeyInfo:
    """Who a verified key belongs to (never the secret)."""

    key_id: str
    tenant: str
    name: str
    role: str
    created_at: str
    revoked_at: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class KeyStore:
    """The `api_keys` table of a workspace's registry.sqlite."""

    def __init__(self, registry_path: str | Path):
        self.path = Path(registry_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)

    def _db(self) -> Any:
        return connect(self.path)

    def create(self, tenant: str, name: str = "default", role: str = "tenant") -> tuple[str, KeyInfo]:
        """A new key for `tenant`: (the token, shown once; its info)."""
        check_name(tenant, "tenant")
        if role not in ROLES:
            raise StudioError(f"unknown key role {role!r}", hint=f"use one of: {', '.join(ROLES)}")
        if not name or len(name) > 64 or not name.isprintable():
            raise StudioError("a key name must be 1-64 printable characters")
        with self._db() as db:
            while True:
                key_id = secrets.token_hex(4)
                if db.execute("SELECT 1 FROM api_keys WHERE key_id=?", (key_id,)).fetchone() is None:
                    break
            token = f"{PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
            created = now_iso()
            db.execute("INSERT INTO api_keys VALUES (?,?,?,?,?,?,?)",
                       (key_id, tenant, name, role, _digest(token), created, None))
        return token, KeyInfo(key_id, tenant, name, role, created)

    def list(self, tenant: str | None = None, include_revoked: bool = False) -> list[KeyInfo]:
        sql = "SELECT key_id, tenant, name, role, created_at, revoked_at FROM api_keys"
        where, args = [], []
        if tenant is not None:
            where.append("tenant=?")
            args.append(tenant)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY created_at, key_id", args).fetchall()
        return [KeyInfo(**dict(r)) for r in rows]

    def revoke(self, key_id: str) -> KeyInfo:
        with self._db() as db:
            row = db.execute("SELECT key_id, tenant, name, role, created_at, revoked_at FROM api_keys "
                             "WHERE key_id=?", (key_id,)).fetchone()
            if row is None:
                raise NotFound(f"no API key with id {key_id!r}", hint="see `studio keys list`")
            if row["revoked_at"] is None:
                db.execute("UPDATE api_keys SET revoked_at=? WHERE key_id=?", (now_iso(), key_id))
        return KeyInfo(**{**dict(row), "revoked_at": row["revoked_at"] or now_iso()})

    def authenticate(self, token: str | None) -> KeyInfo | None:
        """The key's info if `token` is a live key of this workspace, else None (never raises)."""
        match = _KEY_RE.match(token or "")
        if not match:
            return None
        with self._db() as db:
            row = db.execute("SELECT * FROM api_keys WHERE key_id=?", (match.group(1),)).fetchone()
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(row["sha256"], _digest(token or "")):
            return None
        return KeyInfo(row["key_id"], row["tenant"], row["name"], row["role"], row["created_at"])

