"""Tests for the refine stages: split (normalize: test_normalize.py, turns: test_turns.py, quality:
test_quality.py, PII: test_pii.py, dedup: test_dedup.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from engine.config import SplitSpec
from engine.data.stages.split import assign, split
from engine.records import Conversation, Reject, SourceRef


def conv(cid: str, *turns: tuple[str, str], line: int = 1) -> Conversation:
    return Conversation(id=cid, messages=[{"role": r, "content": c} for r, c in turns],
                        source=SourceRef("t.jsonl", line, cid.upper()))


# -------------------------------------------------------------------------------------- split
def test_split_is_deterministic_stable_and_close_to_fractions() -> None:
    spec = SplitSpec(val_fraction=0.1, eval_fraction=0.2)
    ids = [f"{i:016x}" for i in range(4000)]
    first = [assign(i, 42, spec) for i in ids]
    assert first == [assign(i, 42, spec) for i in ids]
    counts = Counter(first)
    assert abs(counts["eval"] / 4000 - 0.2) < 0.03 and abs(counts["val"] / 4000 - 0.1) < 0.03
    # a record's split does not depend on the other records
    assert [assign(i, 42, spec) for i in ids[::7]] == first[::7]
    # another seed gives another assignment
    assert [assign(i, 7, spec) for i in ids] != first
    # zero fractions put everything into train
    assert {assign(i, 42, SplitSpec(val_fraction=0, eval_fraction=0)) for i in ids} == {"train"}


def test_split_keeps_input_order() -> None:
    records = [conv(f"r{i}", ("user", "q"), ("assistant", "a")) for i in range(50)]
    out = list(split(records, 1, SplitSpec(val_fraction=0.2, eval_fraction=0.3)))
    assert [c.id for _, c in out] == [r.id for r in records]
    assert {name for name, _ in out} == {"train", "val", "eval"}
