"""The LLM stages of `refine.executor: datatrove` (judge, Q/A extraction, rewrite, preferences) as
datatrove phases, each task loading the local model once for its shard.

Only engine/data/refine_datatrove.py imports this module. In-process, each LLM stage streams its
records through one backend in the driver (stages/llm/, via stages/llm/dispatch.py). On datatrove
a stage is one phase (DatatroveJob.llm, RefineRun's llm_runner):

  driver  spools the stage's input stream (every record, marked whether the stage takes it:
          preferences takes the train split only) and deals the records it takes to `tasks`
          shards in blocks of a multiple of `llm.batch_size` records, so that every batch a task
          forms is exactly a batch the in-process stage forms: the same prompts padded together,
          the same outputs.
  tasks   LlmStageStep runs the very stage function (dispatch.run_stage) over its shard on a
          backend of its own (the model loads on the first batch; torch threads: the cores
          shared by the workers running at once) and writes one group line per record: the
          items the stage yielded for it (the record, changed or not, a reject, Q/A pairs after
          their transcript), its judge note or preference row, and its stage counts.
  driver  reads the spool in order; a record the stage took gets its group line (checked against
          its id), which gives RefineRun what the in-process stage gives: the notes, rows and
          counts before the items. So the version is byte-identical to `executor: local`.

Each stage has its own logs and completion markers (logs/llm-<stage>), so a rerun resumes at the
tasks that did not finish; the work directory's key includes the models' weights.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import offline
from engine.data.stages.llm.dispatch import ONE_TO_ONE, run_stage
from engine.records import Conversation, Reject

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

from datatrove.data import Document, DocumentsPipeline  # noqa: E402
from datatrove.pipeline.base import PipelineStep  # noqa: E402
from datatrove.utils.typeshelper import StatHints  # noqa: E402

if TYPE_CHECKING:
    from engine.config import LlmStagesSpec

BackendFactory = Callable[[Path, "Path | None", int], Any]


def llm_block(block: int, batch_size: int) -> int:
    """Records per block of an LLM phase: `block` rounded up to a multiple of the batch size."""
    return batch_size * -(-block // batch_size)


class _LazyBackend:
    """The task's backend, made on first use (a task without records loads nothing)."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self._backend = make, None

    def __getattr__(self, name: str) -> Any:
        if self._backend is None:
            self._backend = self._make()
        return getattr(self._backend, name)


def encode_item(item: Conversation | Reject) -> dict[str, Any]:
    if isinstance(item, Reject):
        return {"reject": item.to_dict()}
    return {"record": item.to_dict()}


def decode_item(data: dict[str, Any]) -> Conversation | Reject:
    if "reject" in data:
        return Reject.from_dict(data["reject"])
    return Conversation.from_dict(data["record"])


class LlmStageStep(PipelineStep):
    """One LLM stage over task r's records: one group line per record (see the module docstring)."""

    type = "🤖 - LLM"
    name = "🤖 LLM stage"

    def __init__(self, stage: str, spec: "LlmStagesSpec", model_dir: str, adapter_dir: str | None,
                 threads: int, backend: BackendFactory):
        super().__init__()
        self.stage, self.spec, self.threads, self.backend = stage, spec, threads, backend
        self.model_dir, self.adapter_dir = model_dir, adapter_dir

    def _open(self) -> Any:
        return self.backend(Path(self.model_dir),
                            Path(self.adapter_dir) if self.adapter_dir else None, self.threads)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        pending: deque[Conversation] = deque()  # records pulled by the stage, not yet grouped

        def records() -> Iterator[Conversation]:
            for doc in data or ():
                conv = Conversation.from_dict(doc.metadata["record"])
                pending.append(conv)
                self.stat_update(StatHints.total)
                yield conv

        notes: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        stats: Counter = Counter()
        counted: Counter = Counter()
        group: dict[str, Any] | None = None
        items = run_stage(self.stage, records(), self.spec, _LazyBackend(self._open), notes=notes,
                          writer=lambda _id, row: rows.append(row), stats=stats)
        for item in items:
            if group is None or self._starts(item, pending):
                if group is not None:
                    yield self._document(group)
                source = pending.popleft()
                if (item.record_id if isinstance(item, Reject) else item.id) != source.id:
                    raise RuntimeError(f"the {self.stage} stage yielded items out of order")
                group = {"id": source.id, "items": [], "notes": [], "prefs": [], "stats": {}}
            group["items"].append(encode_item(item))
            group["notes"] += notes  # what the stage noted before yielding this item
            group["prefs"] += rows
            notes.clear()
            rows.clear()
            for key, n in stats.items():  # a key new at 0 too: the card shows "pairs": 0
                if key not in counted or n != counted[key]:
                    group["stats"][key] = group["stats"].get(key, 0) + n - counted.get(key, 0)
            counted = stats.copy()
            self.stat_update("rejected" if isinstance(item, Reject) else StatHints.forwarded)
        if group is not None:
            yield self._document(group)

    def _starts(self, item: Conversation | Reject, pending: deque[Conversation]) -> bool:
        """Whether `item` is the first of the next record's items: every item of a 1:1 stage;
        for extract_qa the record itself (the very object) or its reject, not a new pair."""
        if self.stage in ONE_TO_ONE or isinstance(item, Reject):
            return True
        return bool(pending) and item is pending[0]

    @staticmethod
    def _document(group: dict[str, Any]) -> Document:
        return Document(text="", id=group["id"], metadata=group)


def merge_group(group: dict[str, Any], *, notes: list[dict[str, Any]] | None,
                writer: Callable[[str, dict[str, Any]], None] | None,
                stats: Counter | None) -> Iterator[Conversation | Reject]:
    """One record's group line as the in-process stage gives it: its note, preference rows and
    counts first, then its items."""
    if notes is not None:
        notes.extend(group["notes"])
    if writer is not None:
        for row in group["prefs"]:
            writer(group["id"], row)
    if stats is not None:
        stats.update(group["stats"])
    for data in group["items"]:
        yield decode_item(data)
