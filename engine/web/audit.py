"""Reading `<workspace>/audit/audit.jsonl` and checking its hash chain (the dashboard's viewer).

Format (owned by engine/privacy/audit.py): one JSON object per line with `seq`, `ts`, `actor`,
`action`, `tenant`, `ids`, `hashes`, `prev` (the previous line's `hash`, 64 zeros for the first)
and `hash` = sha256 of the canonical JSON of the entry without `hash`. This small verifier
recomputes every hash; the privacy module's own verify can replace it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.hashing import canonical_json

GENESIS = "0" * 64


@dataclass
class ChainStatus:
    present: bool
    entries: int = 0
    ok: bool = True
    broken_at: int | None = None  # 1-based line number of the first bad entry
    reason: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def read_and_verify(path: Path) -> ChainStatus:
    """Every entry of the log and whether the chain holds (first broken line and why)."""
    if not path.is_file():
        return ChainStatus(present=False)
    status = ChainStatus(present=True)
    prev, last_seq = GENESIS, None
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError
        except ValueError:
            status.ok, status.broken_at = False, lineno
            status.reason = "not a JSON object"
            break
        status.entries += 1
        status.rows.append(entry)
        if status.ok:
            if entry.get("prev") != prev:
                status.ok, status.broken_at, status.reason = False, lineno, "prev does not match the previous hash"
            elif entry.get("hash") != entry_hash(entry):
                status.ok, status.broken_at, status.reason = False, lineno, "hash does not match the entry"
            elif last_seq is not None and entry.get("seq") != last_seq + 1:
                status.ok, status.broken_at, status.reason = False, lineno, "seq is not consecutive"
        prev = entry.get("hash", "")
        last_seq = entry.get("seq") if isinstance(entry.get("seq"), int) else None
    return status
