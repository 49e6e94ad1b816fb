"""Decontamination of `refine.executor: datatrove` as a datatrove phase over the train/val records,
against an eval index cut into shards that are built, stored and loaded one at a time.

Only engine/data/refine_datatrove.py imports this module. The in-process refine builds one index
of the eval items (stages/decontam.py: the eval split plus `decontam.against`) in the driver and
checks every train/val record against it in its second pass. On datatrove:

  driver   EvalShards takes the eval items as the refine finds them, in the same order, into an
           EvalIndex of at most `datatrove.decontam_shard_items` items; a full one is pickled to
           the work directory (n-gram hashes, MinHash signatures and ids, never texts) and the
           next begins. So the driver holds one shard, not the eval split.
  tasks    the spooled train/val records are dealt to `tasks` shards. A task (DecontamCheck)
           computes each record's user words and MinHash signature once, into a scratch file,
           then loads the index shards one after the other and checks every record against
           each: the best n-gram overlap so far and the best MinHash match so far (the higher
           score; ties to the earlier item, as shards come in item order). An n-gram hit
           anywhere wins, else the MinHash match: what EvalIndex.check computes over the whole
           index, since each shard's best is the best of its items. One verdict line per record.
  driver   reads the verdicts back in spool order, each checked against its record: the same
           rejects, worded the same, in the same order.

Memory: a task holds one index shard and a few numbers per record of its spool shard (the words
and signatures wait on disk); the driver one index shard while it builds them.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import offline
from engine.data.stages.decontam import STAGE, EvalIndex, user_words
from engine.records import Conversation, Reject

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

from datatrove.data import Document, DocumentsPipeline  # noqa: E402
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

    add_all = EvalIndex.add_all  # each through `add`, the count

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
    """Task r: spool shard r's records against every index shard, loaded one at a time (see the
    module docstring). Then one line per record: {"id", "hit": [reason, detail] or null}."""

    type = "🧽 - DECONTAM"
    name = "🧽 Eval overlap"

    def __init__(self, index_dir: str, shards: int, scratch: str):
        super().__init__()
        self.index_dir, self.shards, self.scratch = Path(index_dir), shards, Path(scratch)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.scratch / f"{rank:05d}.features"
        try:
            first, index = _load(self.index_dir, 0)
            ids = self._features(data or (), index, path)
            overlap: list[list[Any] | None] = [None] * len(ids)  # per record: [item, score, …]
            near: list[list[Any] | None] = [None] * len(ids)
            for k in range(self.shards):
                if k:
                    del index
                    first, index = _load(self.index_dir, k)
                with self.track_time():
                    for i, (words, signature) in enumerate(_read_features(path)):
                        hit = index.overlap_hit_words(words)
                        if hit is not None:
                            overlap[i] = _better(overlap[i], first, hit)
                        elif overlap[i] is None:  # an n-gram hit anywhere wins over MinHash
                            found = index.near_hit_signature(signature)
                            if found is not None:
                                near[i] = _better(near[i], first, found)
        finally:
            path.unlink(missing_ok=True)
        for record_id, o, n in zip(ids, overlap, near):
            hit = o or n
            self.stat_update(StatHints.total)
            self.stat_update("contaminated" if hit else StatHints.forwarded)
            yield Document(text="", id=record_id,
                           metadata={"id": record_id, "hit": hit[2:] if hit else None})

    def _features(self, data: DocumentsPipeline, index: EvalIndex, path: Path) -> list[str]:
        """Each record's user words and signature to the scratch file; the ids, in order."""
        ids: list[str] = []
        with open(path, "wb") as out, self.track_time():
            for doc in data:
                conv = Conversation.from_dict(doc.metadata["record"])
                words = user_words(conv.messages)
                signature = index.signer.sign(conv).hashvalues.astype("<u4")
                out.write(_HEAD.pack(len(words), len(signature)))
                out.write(words.astype("<u8").tobytes())
                out.write(signature.tobytes())
                ids.append(conv.id)
        return ids


_HEAD = struct.Struct("<II")


def _read_features(path: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    with open(path, "rb") as f:
        while head := f.read(_HEAD.size):
            n, width = _HEAD.unpack(head)
            words = np.frombuffer(f.read(8 * n), dtype="<u8").astype(np.uint64)
            yield words, np.frombuffer(f.read(4 * width), dtype="<u4").astype(np.uint32)


def _load(folder: Path, k: int) -> tuple[int, EvalIndex]:
    with open(shard_path(folder, k), "rb") as f:
        return pickle.load(f)  # our own file, written by this job's driver


def _better(cur: list[Any] | None, first: int, hit: tuple[int, float, str, str]) -> list[Any]:
    """The better of the best hit so far and a shard's (items numbered from `first`): the
    higher score, ties to the earlier item (shards come in item order)."""
    if cur is not None and cur[1] >= hit[1]:
        return cur
    return [first + hit[0], hit[1], hit[2], hit[3]]


def verdict(conv: Conversation, line: dict[str, Any]) -> Conversation | Reject:
    """What `decontaminate` yields for `conv`, from its task's verdict line."""
    if line["hit"] is None:
        return conv
    reason, detail = line["hit"]
    return Reject(source=conv.source, stage=STAGE, reason=reason, detail=detail,
                  record_id=conv.id)
