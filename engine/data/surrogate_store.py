"""The PII surrogate numbering on disk: (type, canonical value) → placeholder in an SQLite table,
for a refine whose driver must not hold one entry per distinct value in memory.

stages/pii.py's `Surrogates` numbers placeholders per type in order of first appearance over the
whole refine, keeping (type, value) → placeholder in a dict: one entry per distinct value, which
grows with the corpus (about 380,000 entries at 1M noisy conversations). `refine.executor:
datatrove` gives it this store instead (`DiskIds`), in the job's work directory (customer data,
mode 0600, removed with it): the same numbers, looked up by primary key, with SQLite's page cache
as the only memory. The vault's mapping (`pii.vault: encrypted`) still lives in memory: the vault
is written whole at the end.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

CACHE_KIB = 64 * 1024  # SQLite's page cache: the store's memory


class DiskIds:
    """`get` and `[key] = placeholder` over an SQLite table (one uncommitted transaction: the
    file is scratch, never reopened)."""

    def __init__(self, path: Path):
        self.path = path
        path.unlink(missing_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", f"cache_size = -{CACHE_KIB}",
                       "temp_store = FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("CREATE TABLE ids (kind TEXT NOT NULL, value TEXT NOT NULL, "
                        "placeholder TEXT NOT NULL, PRIMARY KEY (kind, value)) WITHOUT ROWID")
        self.db.execute("BEGIN")
        self.size = 0

    def get(self, key: tuple[str, str]) -> str | None:
        row = self.db.execute("SELECT placeholder FROM ids WHERE kind = ? AND value = ?",
                              key).fetchone()
        return row[0] if row is not None else None

    def __setitem__(self, key: tuple[str, str], placeholder: str) -> None:
        self.db.execute("INSERT INTO ids VALUES (?, ?, ?)", (*key, placeholder))
        self.size += 1

    def __len__(self) -> int:
        return self.size

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)
