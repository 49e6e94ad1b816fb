"""The SQLite registry of models, datasets, runs and evals (stdlib sqlite3, one file per workspace).

The database file (and its -wal/-shm/-journal files) is mode 0600 whoever opens it first. Also
dataset references ('name', 'name@vN') and their resolution to a registered version.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.errors import StudioError

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY, path TEXT NOT NULL, source TEXT NOT NULL, source_sha256 TEXT,
    manifest_sha256 TEXT NOT NULL, format TEXT NOT NULL, created_at TEXT NOT NULL, meta TEXT
);
CREATE TABLE IF NOT EXISTS datasets (
    tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL,
    sha256 TEXT NOT NULL, counts TEXT, created_at TEXT NOT NULL, ingest_started_at TEXT,
    PRIMARY KEY (tenant, name, version)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, method TEXT NOT NULL, base_model TEXT NOT NULL,
    dataset TEXT NOT NULL, status TEXT NOT NULL, path TEXT NOT NULL, created_at TEXT NOT NULL,
    finished_at TEXT, metrics TEXT, parent_run TEXT
);
CREATE TABLE IF NOT EXISTS evals (
    eval_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL, model_ref TEXT NOT NULL,
    dataset TEXT NOT NULL, path TEXT NOT NULL, created_at TEXT NOT NULL, summary TEXT
);
"""
_JSON_COLUMNS = {"meta", "counts", "metrics", "summary"}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in _JSON_COLUMNS & out.keys():
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out


SIDE_FILES = ("-wal", "-shm", "-journal")


def restrict(path: str | Path) -> None:
    """Owner-only (0600) database file, created so before SQLite opens it, and its side files."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
    except FileNotFoundError:  # no parent directory: sqlite3 reports it
        return
    for p in (path, *(Path(f"{path}{s}") for s in SIDE_FILES)):
        try:
            if p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
        except FileNotFoundError:
            continue


# SQLite's "database disk image is malformed" and "file is not a database"
_UNREADABLE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


@contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """One transaction on registry.sqlite (rows as sqlite3.Row): committed on success, rolled back
    on an error, the connection closed either way. Modules that own their own tables use it too.
    A damaged file is a StudioError naming it (not a traceback); SQLite itself rolls back an
    interrupted transaction (a hot journal, a torn WAL frame) when the file is next opened."""
    restrict(path)
    try:
        with closing(sqlite3.connect(path, timeout=30)) as db:
            db.row_factory = sqlite3.Row
            with db:
                yield db
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) not in _UNREADABLE:
            raise
        raise StudioError(f"the registry cannot be read: {exc}", where=str(path),
                          hint="the file is damaged: restore it from a backup") from exc


def table_rows(path: str | Path, table: str, sql: str,
               args: tuple[Any, ...] = ()) -> list[dict[str, Any]] | None:
    """Rows of a read query, or None when `table` (owned by another module) does not exist yet."""
    if not Path(path).is_file():
        return None
    with connect(path) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                      (table,)).fetchone() is None:
            return None
        return [dict(r) for r in db.execute(sql, args)]


class Registry:
    """Thin, explicit access to registry.sqlite; every write is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            if "parent_run" not in columns:  # registries created before runs had lineage
                db.execute("ALTER TABLE runs ADD COLUMN parent_run TEXT")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with connect(self.path) as db:
            db.execute("PRAGMA foreign_keys = ON")
            yield db

    def _one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        with self._db() as db:
            return _row(db.execute(sql, args).fetchone())

    def _all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with self._db() as db:
            return [_row(r) for r in db.execute(sql, args).fetchall()]  # type: ignore[misc]

    # models ---------------------------------------------------------------------------------
    def put_model(self, name: str, path: Path, source: str, source_sha256: str | None,
                  manifest_sha256: str, fmt: str, meta: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?,?,?)",
                (name, str(path), source, source_sha256, manifest_sha256, fmt, now_iso(),
                 json.dumps(meta)),
            )

    def get_model(self, name: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM models WHERE name = ?", name)

    def list_models(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM models ORDER BY name")

    # datasets -------------------------------------------------------------------------------
    def next_dataset_version(self, tenant: str, name: str) -> int:
        row = self._one("SELECT MAX(version) AS v FROM datasets WHERE tenant=? AND name=?", tenant, name)
        return int(row["v"] or 0) + 1 if row else 1

    def put_dataset(self, tenant: str, name: str, version: int, path: Path, sha256: str,
                    counts: dict[str, Any], ingest_started_at: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO datasets VALUES (?,?,?,?,?,?,?,?)",
                (tenant, name, version, str(path), sha256, json.dumps(counts), now_iso(),
                 ingest_started_at),
            )

    def get_dataset(self, tenant: str, name: str, version: int | None = None) -> dict[str, Any] | None:
        if version is None:
            return self._one(
                "SELECT * FROM datasets WHERE tenant=? AND name=? ORDER BY version DESC LIMIT 1",
                tenant, name)
        return self._one("SELECT * FROM datasets WHERE tenant=? AND name=? AND version=?",
                         tenant, name, version)

    def list_datasets(self, tenant: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM datasets WHERE tenant=? ORDER BY name, version", tenant)

    # runs -----------------------------------------------------------------------------------
    def put_run(self, run_id: str, tenant: str, method: str, base_model: str, dataset: str,
                path: Path, parent_run: str | None = None) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO runs (run_id, tenant, method, base_model, dataset, status, path, "
                "created_at, finished_at, metrics, parent_run) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, tenant, method, base_model, dataset, "running", str(path), now_iso(),
                 None, None, parent_run),
            )

    def finish_run(self, run_id: str, status: str, metrics: dict[str, Any] | None = None) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET status=?, finished_at=?, metrics=? WHERE run_id=?",
                       (status, now_iso(), json.dumps(metrics or {}), run_id))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM runs WHERE run_id = ?", run_id)

    def list_runs(self, tenant: str | None = None) -> list[dict[str, Any]]:
        if tenant is None:
            return self._all("SELECT * FROM runs ORDER BY created_at")
        return self._all("SELECT * FROM runs WHERE tenant=? ORDER BY created_at", tenant)

    # evals ----------------------------------------------------------------------------------
    def put_eval(self, eval_id: str, tenant: str, kind: str, model_ref: str, dataset: str,
                 path: Path, summary: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO evals VALUES (?,?,?,?,?,?,?,?)",
                       (eval_id, tenant, kind, model_ref, dataset, str(path), now_iso(),
                        json.dumps(summary)))

    def get_eval(self, eval_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM evals WHERE eval_id = ?", eval_id)

    def list_evals(self, tenant: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM evals WHERE tenant=? ORDER BY created_at", tenant)


# ------------------------------------------------------------------------------ dataset refs
_REF = re.compile(r"^(?P<name>[^@\s]+)(?:@(?:[vV]?(?P<version>\d+)|(?P<latest>latest)))?$")


def parse_dataset_ref(ref: str) -> tuple[str, int | None]:
    """'name' or 'name@latest' → (name, None); 'name@v3' or 'name@3' → (name, 3)."""
    m = _REF.match((ref or "").strip())
    if not m:
        raise StudioError(f"invalid dataset reference {ref!r}",
                          hint="use 'name' (latest version), 'name@vN' or 'name@N'")
    version = m.group("version")
    return m.group("name"), (int(version) if version is not None else None)


def resolve_dataset(registry: Registry, tenant: str, ref: str) -> dict[str, Any]:
    """The registry row of a dataset version; StudioError listing what exists when not found."""
    name, version = parse_dataset_ref(ref)
    row = registry.get_dataset(tenant, name, version)
    if row is not None:
        return row
    rows = registry.list_datasets(tenant)
    versions = [r["version"] for r in rows if r["name"] == name]
    if versions:
        hint = (f"available versions of {name!r}: {', '.join(f'v{v}' for v in sorted(versions))}"
                f" (or '{name}' for the latest)")
    elif rows:
        names = sorted({r["name"] for r in rows})
        hint = f"datasets in tenant {tenant!r}: {', '.join(names)}"
    else:
        hint = f"tenant {tenant!r} has no datasets yet; run `studio refine CONFIG` first"
    raise StudioError(f"dataset {ref!r} not found in tenant {tenant!r}", hint=hint)
