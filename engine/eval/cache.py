"""Generation cache: model outputs keyed by (model identity, prompt, generation settings) per tenant.

Re-running an eval or a diff on the same model, items and settings generates nothing: every
output comes from `tenants/<t>/cache/generations.sqlite`. One SQLite file (stdlib sqlite3, WAL
journal, a busy timeout) rather than one file per output: an eval of N items is one read and one
write transaction instead of N file creations, concurrent evals of the same tenant are safe (WAL
lets readers run beside the single writer; `INSERT OR REPLACE` of the same key by two writers is
idempotent), and purging a tenant's cache is deleting one file.

The key of an output is sha256 of three hashes:
- model: canonical JSON of the model identity (base manifest sha256, adapter weight hash, parent
  weights hash — see `engine.models.resolve.ModelRef.weights`);
- item: canonical JSON of the prompt messages (the reference is not part of it: it does not change
  what the model writes);
- settings: max_new_tokens, temperature, seed and the backend's own description (backend name and
  library versions, device, dtype, chat template hash). The batch size is left out for greedy
  decoding (batching does not change a greedy output — scripts/bench_eval.py checks it); a sampled
  output depends on the whole prompt list and the batch size, so those join its settings.
Each row also stores a checksum over its key and output. A row whose checksum does not match, or
that cannot be read, is counted as corrupt, deleted and regenerated — never returned.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.progress import Progress

from engine.hashing import sha256_json, sha256_text
from engine.workspace import Workspace

CACHE_FILE = "generations.sqlite"
KEY_VERSION = 1  # bump when the key recipe changes: old rows then simply miss

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    item TEXT NOT NULL,
    settings TEXT NOT NULL,
    output TEXT NOT NULL,
    checksum TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS generations_model ON generations(model);
"""
_CHUNK = 500  # keys per SELECT ... IN (...) (SQLite's variable limit is 32766; stay far below)


# -------------------------------------------------------------------------------------------- keys
def model_hash(identity: dict[str, Any]) -> str:
    return sha256_json(identity)


def prompt_hash(messages: Sequence[dict[str, Any]]) -> str:
    return sha256_json(list(messages))


def settings_hash(*, max_new_tokens: int, temperature: float, seed: int, backend: dict[str, Any],
                  batch_size: int | None = None, context: str | None = None) -> str:
    """Hash of everything besides weights and prompt that decides an output."""
    settings: dict[str, Any] = {"key_version": KEY_VERSION, "max_new_tokens": max_new_tokens,
                                "temperature": float(temperature), "seed": seed, "backend": backend}
    if temperature > 0:  # sampled: the output depends on the batch it was drawn in
        settings.update(batch_size=batch_size, context=context)
    return sha256_json(settings)


def entry_key(model: str, item: str, settings: str) -> str:
    return sha256_text(f"{model}:{item}:{settings}")


def checksum(key: str, output: str) -> str:
    return sha256_json([key, output])


# ------------------------------------------------------------------------------------------- store
@dataclass
class CacheStats:
    enabled: bool = True
    hits: int = 0
    misses: int = 0
    corrupt: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GenerationCache:
    """Verified get/put of outputs in one SQLite file; every call is one short transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():  # outputs are customer-derived text: owner-only, like evals/
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._init_schema()
        except sqlite3.DatabaseError:  # not a database any more: a cache, so start it afresh
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._init_schema()

    def _init_schema(self) -> None:
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @classmethod
    def for_tenant(cls, ws: Workspace, tenant: str) -> "GenerationCache":
        return cls(ws.tenant_dir(tenant) / "cache" / CACHE_FILE)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=60)) as db:
            db.execute("PRAGMA busy_timeout = 60000")
            with db:  # one transaction, committed on success
                yield db

    def get_many(self, keys: Sequence[str], stats: CacheStats | None = None) -> dict[str, str]:
        """Verified outputs for the keys found; corrupt rows are deleted and left out."""
        found: dict[str, str] = {}
        bad: list[str] = []
        unique = sorted(set(keys))
        with self._db() as db:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                try:
                    rows = db.execute(f"SELECT key, output, checksum FROM generations "
                                      f"WHERE key IN ({marks})", chunk).fetchall()
                except sqlite3.DatabaseError:  # unreadable page: treat the chunk as misses
                    bad.extend(chunk)
                    continue
                for key, output, check in rows:
                    if isinstance(output, str) and isinstance(check, str) \
                            and check == checksum(key, output):
                        found[key] = output
                    else:
                        bad.append(key)
            if bad:
                try:
                    db.executemany("DELETE FROM generations WHERE key = ?", [(k,) for k in bad])
                except sqlite3.DatabaseError:
                    pass
        if stats is not None:
            stats.corrupt += len(bad)
        return found

    def put_many(self, rows: Sequence[tuple[str, str, str, str, str]]) -> None:
        """Store (key, model hash, item hash, settings hash, output) rows."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._db() as db:
            db.executemany(
                "INSERT OR REPLACE INTO generations (key, model, item, settings, output, checksum, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(k, m, i, s, out, checksum(k, out), now) for k, m, i, s, out in rows])

    def count(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def forget_model(self, model: str) -> int:
        """Delete every output of one model hash (e.g. when its run is deleted); returns the count."""
        with self._db() as db:
            return db.execute("DELETE FROM generations WHERE model = ?", (model,)).rowcount


# -------------------------------------------------------------------------------------- generating
def cached_generate(backend: Any, prompts: list[list[dict[str, Any]]], *,
                    model_identity: dict[str, Any], max_new_tokens: int, batch_size: int,
                    temperature: float = 0.0, seed: int = 0,
                    cache: GenerationCache | None = None, progress: Progress | None = None,
                    label: str = "generate") -> tuple[list[str], CacheStats]:
    """Outputs in input order: cached ones read back, only the misses generated (and stored).

    Without a cache, or with a backend that cannot `describe()` itself, everything is generated.
    """
    describe = getattr(backend, "describe", None)
    if cache is None or describe is None:
        outputs = _generate(backend, prompts, max_new_tokens, batch_size, temperature, seed,
                            progress, label)
        return outputs, CacheStats(enabled=False, misses=len(prompts))
    stats = CacheStats()
    model = model_hash(model_identity)
    items = [prompt_hash(p) for p in prompts]
    context = sha256_json(items) if temperature > 0 else None
    settings = settings_hash(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                             backend=describe(), batch_size=batch_size, context=context)
    keys = [entry_key(model, item, settings) for item in items]
    found = cache.get_many(keys, stats)
    outputs: list[str | None] = [found.get(k) for k in keys]
    missing = [i for i, out in enumerate(outputs) if out is None]
    # sampled outputs depend on the whole prompt list: regenerate all of it or nothing
    if temperature > 0 and missing:
        missing = list(range(len(prompts)))
    stats.hits = len(prompts) - len(missing)
    stats.misses = len(missing)
    if missing:
        new = _generate(backend, [prompts[i] for i in missing], max_new_tokens, batch_size,
                        temperature, seed, progress, label)
        rows: dict[str, tuple[str, str, str, str, str]] = {}
        for i, out in zip(missing, new):
            outputs[i] = out
            rows[keys[i]] = (keys[i], model, items[i], settings, out)
        cache.put_many(list(rows.values()))
    return [out if out is not None else "" for out in outputs], stats


def _generate(backend: Any, prompts: list[list[dict[str, Any]]], max_new_tokens: int,
              batch_size: int, temperature: float, seed: int, progress: Progress | None,
              label: str) -> list[str]:
    if not prompts:
        return []
    if temperature > 0:
        return list(backend.generate(prompts, max_new_tokens, batch_size, progress, label=label,
                                     temperature=temperature, seed=seed))
    return list(backend.generate(prompts, max_new_tokens, batch_size, progress, label=label))
