"""Purge with proof: delete a tenant's run / dataset / eval / everything, then write a deletion
certificate (what, when, by whom, audit head) signed with Ed25519, and record it in the audit log.

Certificates live in <workspace>/certificates/<certificate_id>.json; they hold ids, relative
paths, sizes and sha256 of deleted files — never content. `verify_certificate` checks one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import tempfile
import uuid
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from engine.errors import StudioError
from engine.hashing import sha256_file, sha256_json
from engine.privacy import audit, keys
from engine.workspace import Workspace, check_id, check_name

CERT_FORMAT = "expert-studio/deletion-certificate/1"
CERT_FIELDS = ("format", "certificate_id", "workspace_id", "tenant", "selection", "reason",
               "deleted", "when", "by", "audit_head", "public_key", "signature")
_TENANT_TABLES = ("datasets", "runs", "evals", "usage", "served_models", "api_keys")


@dataclass
class Target:
    """One thing to delete: registry rows (table, where-clause, args) and directories/files."""

    ids: dict[str, Any]
    paths: list[Path]
    rows: list[tuple[str, str, tuple[Any, ...]]]


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _query(ws: Workspace, sql: str, *args: Any) -> list[dict[str, Any]]:
    if not ws.registry_path.exists():
        return []
    with closing(sqlite3.connect(ws.registry_path, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute(sql, args).fetchall()]
        except sqlite3.OperationalError:  # table not created yet
            return []


def select(ws: Workspace, tenant: str, *, run: str | None = None, dataset: str | None = None,
           eval_id: str | None = None, everything: bool = False) -> Target:
    """Resolve what a purge would delete; StudioError when it names nothing of this tenant."""
    check_name(tenant, "tenant")
    tdir = ws.tenant_dir(tenant, create=False)
    if sum(x is not None and x is not False for x in (run, dataset, eval_id, everything)) != 1:
        raise StudioError("say what to purge: exactly one of --run, --dataset, --eval, --all, --expired")
    if everything:
        if not tdir.exists() and not _query(ws, "SELECT 1 FROM datasets WHERE tenant=? UNION "
                                                "SELECT 1 FROM runs WHERE tenant=?", tenant, tenant):
            raise StudioError(f"tenant {tenant!r} has nothing to purge")
        rows = [(t, "tenant=?", (tenant,)) for t in _TENANT_TABLES]
        store = tdir.parent / f".store-{tenant}"  # an encrypted tenant's sealed files mid-job
        return Target({"scope": "tenant"}, [tdir] + ([store] if store.exists() else []), rows)
    if run is not None:
        check_id(run, "run")
        row = next(iter(_query(ws, "SELECT * FROM runs WHERE run_id=? AND tenant=?", run, tenant)), None)
        if row is None and not (tdir / "runs" / run).exists():
            raise StudioError(f"unknown run {run!r} for tenant {tenant!r}", hint="see `studio runs list`")
        return Target({"run_id": run}, [tdir / "runs" / run], [("runs", "run_id=? AND tenant=?", (run, tenant))])
    if eval_id is not None:
        check_id(eval_id, "eval")
        row = next(iter(_query(ws, "SELECT * FROM evals WHERE eval_id=? AND tenant=?", eval_id, tenant)), None)
        if row is None and not (tdir / "evals" / eval_id).exists():
            raise StudioError(f"unknown eval {eval_id!r} for tenant {tenant!r}")
        return Target({"eval_id": eval_id}, [tdir / "evals" / eval_id],
                      [("evals", "eval_id=? AND tenant=?", (eval_id, tenant))])
    assert dataset is not None
    name, _, ver = dataset.partition(":") if ":" in dataset else dataset.partition("@")
    check_name(name, "dataset")
    if ver:
        try:
            version = int(ver.lstrip("v"))
        except ValueError:
            raise StudioError(f"bad dataset version {ver!r}", hint="use NAME or NAME:vN") from None
        path = tdir / "datasets" / name / f"v{version}"
        rows = [("datasets", "tenant=? AND name=? AND version=?", (tenant, name, version))]
        ids: dict[str, Any] = {"dataset": name, "version": version}
    else:
        path = tdir / "datasets" / name
        rows = [("datasets", "tenant=? AND name=?", (tenant, name))]
        ids = {"dataset": name}
    if not path.exists() and not _query(ws, f"SELECT 1 FROM datasets WHERE {rows[0][1]}", *rows[0][2]):
        raise StudioError(f"unknown dataset {dataset!r} for tenant {tenant!r}",
                          hint="see `studio datasets list`")
    return Target(ids, [path], rows)


def inventory(ws: Workspace, paths: list[Path]) -> list[dict[str, Any]]:
    """Every regular file under `paths`: workspace-relative path, size, sha256 (sorted)."""
    files = []
    for root in paths:
        if root.is_symlink() or root.is_file():
            candidates = [root]
        elif root.is_dir():
            candidates = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
        else:
            candidates = []
        for p in candidates:
            rel = p.relative_to(ws.root).as_posix()
            if p.is_symlink():
                files.append({"path": rel, "size": 0, "sha256": None, "symlink": True})
            else:
                files.append({"path": rel, "size": p.stat().st_size, "sha256": sha256_file(p)})
    return sorted(files, key=lambda f: f["path"])


def _delete_rows(ws: Workspace, rows: list[tuple[str, str, tuple[Any, ...]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not ws.registry_path.exists():
        return counts
    with closing(sqlite3.connect(ws.registry_path, timeout=30)) as db, db:
        present = _tables(db)
        for table, where, args in rows:
            if table in present:
                n = db.execute(f"DELETE FROM {table} WHERE {where}", args).rowcount
                if n:
                    counts[table] = counts.get(table, 0) + n
    return counts


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def sign(body: dict[str, Any], ws: Workspace) -> dict[str, Any]:
    key = keys.signing_key(ws)
    cert = dict(body, public_key=keys.public_pem(key))
    cert["signature"] = base64.b64encode(key.sign(audit.canonical(cert))).decode("ascii")
    return cert


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def purge(ws: Workspace, tenant: str, target: Target, *, actor: str | None = None,
          reason: str = "requested", extra_files: list[Path] | None = None) -> tuple[dict[str, Any], Path]:
    """Delete `target` (files, rows; for a whole tenant also its data key), sign a certificate."""
    files = inventory(ws, target.paths + list(extra_files or []))
    # rows first: a crash in between leaves files without rows (still purgeable), never the reverse
    rows = _delete_rows(ws, target.rows)
    for p in target.paths + list(extra_files or []):
        if p.is_symlink() or p.is_file():
            p.unlink(missing_ok=True)
        elif p.is_dir():
            shutil.rmtree(p)
    destroyed = []
    if target.ids.get("scope") == "tenant":
        shredded = keys.destroy_tenant_key(ws, tenant)
        if shredded is not None:
            destroyed.append("tenant-data-key")
    cert_id = f"cert-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    deleted = {"ids": target.ids, "files": files, "registry_rows": rows, "keys_destroyed": destroyed,
               "file_count": len(files), "bytes": sum(f["size"] for f in files)}
    by = actor or audit.os_user()
    entry = audit.record(ws, "purge", tenant=tenant, actor=by,
                         ids={**target.ids, "certificate_id": cert_id, "reason": reason,
                              "files": len(files), "bytes": deleted["bytes"]},
                         hashes={"deleted_manifest": sha256_json(files)})
    body = {"format": CERT_FORMAT, "certificate_id": cert_id, "workspace_id": keys.workspace_id(ws),
            "tenant": tenant, "selection": target.ids, "reason": reason, "deleted": deleted,
            "when": _now(), "by": by, "audit_head": entry["hash"]}
    cert = sign(body, ws)
    path = Path(ws.root) / "certificates" / f"{cert_id}.json"
    _write_json(path, cert)
    return cert, path


def verify_certificate(path: str | Path, public_key_pem: str | None = None) -> dict[str, Any]:
    """Check structure and Ed25519 signature against a key the caller trusts: `public_key_pem`,
    else this installation's audit key (keys.audit_public_key; StudioError when there is none).
    The key the certificate carries is never trusted by itself: it must be that key."""
    try:
        cert = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StudioError("certificate not found", where=str(path)) from None
    except ValueError:
        raise StudioError("not a JSON certificate", where=str(path)) from None
    if not isinstance(cert, dict) or set(cert) != set(CERT_FIELDS) or cert["format"] != CERT_FORMAT:
        raise StudioError("not a deletion certificate (fields or format differ)", where=str(path))
    deleted = cert["deleted"]
    files = deleted.get("files") if isinstance(deleted, dict) else None
    if not isinstance(files, list) or deleted.get("file_count") != len(files) or \
            deleted.get("bytes") != sum(int(f.get("size", 0)) for f in files):
        raise StudioError("certificate file list is inconsistent", where=str(path))
    embedded = keys.load_public_pem(cert["public_key"])
    trusted, source = keys.audit_public_key(None, public_key_pem)
    if keys.public_pem(trusted) != keys.public_pem(embedded):
        raise StudioError(f"certificate was signed by a different key ({keys.fingerprint(embedded)}) "
                          f"than {source} ({keys.fingerprint(trusted)})", where=str(path))
    body = {k: v for k, v in cert.items() if k != "signature"}
    try:
        embedded.verify(base64.b64decode(cert["signature"]), audit.canonical(body))
    except (InvalidSignature, ValueError):
        raise StudioError("signature is invalid: the certificate was altered or not signed by "
                          "this key", where=str(path)) from None
    return cert
