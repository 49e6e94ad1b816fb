"""Decontamination of `refine.executor: datatrove` as a datatrove phase over the train/val records.

Only engine/data/refine_datatrove.py imports this module. The in-process refine checks every
train/val record against the index of the eval items (stages/decontam.py: the eval split plus
`decontam.against`) in its second pass, in the driver. On datatrove the driver pickles that index
(n-gram hashes and MinHash signatures, never texts) into the work directory once the eval split
is complete, deals the spooled train/val records to `tasks` shards, and each task loads the
index and runs the same `EvalIndex.check` on its records (DecontamCheck), writing one verdict
line per record. The driver then reads the verdicts back in input order beside the records and
rejects the hits exactly as `decontaminate` does: the same rejects, in the same order.

Memory: each task holds the index (about the eval split's size, not the corpus's) and one record;
the driver no longer runs the checks, it holds the index it built, as before.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import offline
from engine.data.stages.decontam import STAGE
from engine.records import Conversation, Reject

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

from datatrove.data import DocumentsPipeline  # noqa: E402
from datatrove.pipeline.base import PipelineStep  # noqa: E402
from datatrove.utils.typeshelper import StatHints  # noqa: E402

if TYPE_CHECKING:
    from engine.data.stages.decontam import EvalIndex


def save_index(index: "EvalIndex", path: Path) -> None:
    """The index, pickled beside and renamed into place (a task never reads half a file)."""
    tmp = path.with_name(path.name + ".new")
    with open(tmp, "wb") as f:
        pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


class DecontamCheck(PipelineStep):
    """Each spool line (a train/val record) → {"id", "hit": [reason, detail] or null}."""

    type = "🧽 - DECONTAM"
    name = "🧽 Eval overlap"

    def __init__(self, index_path: str):
        super().__init__()
        self.index_path = index_path

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        index: EvalIndex | None = None
        for doc in data or ():
            if index is None:  # loaded by the task that needs it, once
                with open(self.index_path, "rb") as f:
                    index = pickle.load(f)  # our own file, written by the driver of this job
            with self.track_time():
                conv = Conversation.from_dict(doc.metadata["record"])
                hit = index.check(conv)
                doc.metadata = {"id": conv.id, "hit": list(hit) if hit else None}
            self.stat_update(StatHints.total)
            self.stat_update("contaminated" if hit else StatHints.forwarded)
            yield doc


def verdict(conv: Conversation, line: dict[str, Any]) -> Conversation | Reject:
    """What `decontaminate` yields for `conv`, from its task's verdict line."""
    if line["hit"] is None:
        return conv
    reason, detail = line["hit"]
    return Reject(source=conv.source, stage=STAGE, reason=reason, detail=detail,
                  record_id=conv.id)
