"""Split stage: deterministic train/val/eval assignment by a hash of (seed, record id).

Each record draws u = sha256("seed:id") / 2**64 in [0, 1): u < eval_fraction → eval, then
u < eval_fraction + val_fraction → val, else train. A record's split depends only on its id and
the seed, never on the other records, so it stays put across dataset versions (no eval record
drifts into train when data is added). Output keeps input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from engine.config import SplitSpec
from engine.hashing import sha256_text
from engine.records import Conversation

STAGE = "split"
SPLITS = ("train", "val", "eval")


def draw(record_id: str, seed: int) -> float:
    return int(sha256_text(f"{seed}:{record_id}")[:16], 16) / float(1 << 64)


def assign(record_id: str, seed: int, spec: SplitSpec) -> str:
    u = draw(record_id, seed)
    if u < spec.eval_fraction:
        return "eval"
    if u < spec.eval_fraction + spec.val_fraction:
        return "val"
    return "train"


def split(records: Iterable[Conversation], seed: int,
          spec: SplitSpec) -> Iterator[tuple[str, Conversation]]:
    """(split name, record) for each record, in input order."""
    for conv in records:
        yield assign(conv.id, seed, spec), conv
