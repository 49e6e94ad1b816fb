"""Decontamination of `refine.executor: datatrove` as a datatrove phase over the train/val records,
against an eval index cut into shards that are built, stored and loaded one at a time.

Only engine/data/refine_datatrove.py imports this module. The in-process refine builds one index
of the eval items (stages/decontam.py: the eval split plus `decontam.against`) in the driver and
checks every train/val record against it in its second pass. On datatrove:

  driver   EvalShards takes the eval items as the refine finds them, in the same order, into an
           EvalIndex of at most `datatrove.decontam_shard_items` items; a full one is pickled to
           the work directory (n-gram hashes, MinHash signatures and ids, never texts) and the
           next begins. So the driver holds one shard, not the eval split.
  tasks    the spooled train/val records are dealt to `tasks` shards; with K index shards the
           phase has tasks × K datatrove tasks, task t checking record shard t // K against
           index shard t % K (DecontamCheck): per record, the shard's best n-gram overlap and
           its best MinHash match, each at its threshold, with the item's refine-wide number.
  driver   `combine` takes, per record, the best of its K lines: an n-gram hit anywhere wins
           (the highest share; ties: the first item), else the closest MinHash match (ties: the
           first item). That is what EvalIndex.check computes over the whole index, as each
           shard's best is the best of its items: the same rejects, worded the same, in the same
           order.

Memory: a task holds one index shard and one record; the driver one shard while it builds them.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import offline
from engine.data.stages.decontam import STAGE, EvalIndex
from engine.records import Conversation, Reject

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

from datatrove.data import DocumentsPipeline  # noqa: E402
from datatrove.pipeline.base import PipelineStep  # noqa: E402
from datatrove.utils.typeshelper import StatHints  # noqa: E402

if TYPE_CHECKING:
    from engine.config import DecontamSpec, DedupSpec


def _save(obj: Any, path: Path) -> None:
    """Pickled beside and renamed into place (a task never reads half a file)."""
    tmp = path.with_name(path.name + ".new")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def shard_path(folder: Path, k: int) -> Path:
    return folder / f"index-{k:05d}.pkl"


class EvalShards:
    """RefineRun's eval index on datatrove: `add`, `add_all` and `len` as EvalIndex has them;
    every `per_shard` items go to a pickled shard (see the module docstring)."""

    def __init__(self, spec: "DecontamSpec", dedup: "DedupSpec", folder: Path, per_shard: int):
        self.spec, self.dedup, self.folder, self.per_shard = spec, dedup, folder, per_shard
        self.current = EvalIndex(spec, dedup)
        self.shards = 0  # pickled so far
        self.total = 0

    def __len__(self) -> int:
        return self.total

    def add(self, conv: Conversation) -> None:
        if len(self.current) >= self.per_shard:
            self._flush()
        self.current.add(conv)
        self.total += 1

    def add_all(self, convs: Iterable[Conversation]) -> int:
        n = 0
        for conv in convs:
            self.add(conv)
            n += 1
        return n

    def _flush(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _save((self.shards * self.per_shard, self.current), shard_path(self.folder, self.shards))
        self.shards += 1
        self.current = EvalIndex(self.spec, self.dedup)

    def finish(self) -> int:
        """Pickle the last shard (an empty index when there are no eval items); the count."""
        if len(self.current) or not self.shards:
            self._flush()
        return self.shards


class DecontamCheck(PipelineStep):
    """Each spool line (a train/val record) → {"id", "overlap", "near"}: this task's index
    shard's best hits, [item, score, reason, detail] or null."""

    type = "🧽 - DECONTAM"
    name = "🧽 Eval overlap"

    def __init__(self, index_dir: str, fan: int):
        super().__init__()
        self.index_dir, self.fan = Path(index_dir), fan

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        index: EvalIndex | None = None
        first = 0
        for doc in data or ():
            if index is None:  # loaded by the task that needs it, once
                with open(shard_path(self.index_dir, rank % self.fan), "rb") as f:
                    first, index = pickle.load(f)  # our own file, written by this job's driver
            with self.track_time():
                conv = Conversation.from_dict(doc.metadata["record"])
                overlap, near = index.overlap_hit(conv), index.near_hit(conv)
                doc.metadata = {"id": conv.id,
                                "overlap": [first + overlap[0], *overlap[1:]] if overlap else None,
                                "near": [first + near[0], *near[1:]] if near else None}
            self.stat_update(StatHints.total)
            self.stat_update("overlap_hit" if overlap else "near_hit" if near else "no_hit")
            yield doc


def _best(hits: list[list[Any]]) -> list[Any] | None:
    """The highest score; ties: the first item."""
    return min(hits, key=lambda h: (-h[1], h[0])) if hits else None


def combine(conv: Conversation, lines: list[dict[str, Any]]) -> Conversation | Reject:
    """What `decontaminate` yields for `conv`, from its K verdict lines (one per index shard)."""
    hit = (_best([line["overlap"] for line in lines if line["overlap"]])
           or _best([line["near"] for line in lines if line["near"]]))
    if hit is None:
        return conv
    return Reject(source=conv.source, stage=STAGE, reason=hit[2], detail=hit[3],
                  record_id=conv.id)
