"""The PII numbering on disk (engine/data/surrogate_store.py) gives the in-memory numbering: the
same placeholder for the same (type, value), numbered per type in order of first appearance,
in a private file that closing removes."""

from __future__ import annotations

import random
import stat
from pathlib import Path

from engine.data.stages.pii import Finding, Surrogates
from engine.data.surrogate_store import DiskIds
from engine.records import Conversation, SourceRef


def test_disk_numbering_equals_the_in_memory_numbering(tmp_path: Path) -> None:
    rng = random.Random(3)
    values = [f"user{n}@example.com" for n in range(400)] + [f"+1 415 555 {n:04d}" for n in range(300)]
    memory, ids = Surrogates(), DiskIds(tmp_path / "ids.sqlite")
    disk = Surrogates(ids=ids)
    assert stat.S_IMODE((tmp_path / "ids.sqlite").stat().st_mode) == 0o600
    for n in range(300):
        picked = rng.sample(values, 3)
        text = " and ".join(picked)
        findings, at = [], 0
        for value in picked:
            kind = "email" if "@" in value else "phone"
            findings.append(Finding(0, at, at + len(value), kind, value))
            at += len(value) + len(" and ")
        conv = Conversation(id=str(n), messages=[{"role": "user", "content": text}],
                            source=SourceRef("f", n + 1))
        assert disk.apply(conv, findings) == memory.apply(conv, findings)
    assert len(ids) == len(memory._ids) > 300  # values seen again kept their number
    assert memory.mapping == disk.mapping
    ids.close()
    assert not (tmp_path / "ids.sqlite").exists()
