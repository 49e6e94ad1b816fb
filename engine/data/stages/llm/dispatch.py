"""The four LLM stages by name, with one call shape, and running a 1:1 stage on some records only.

The refine runs a stage either here (engine/data/refine_passes.py, one backend in the driver) or
on datatrove tasks with the model loaded per worker (engine/data/refine_datatrove_llm.py); both go
through `run_stage`, so both run the very same stage function on the very same batches.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from engine.config import LlmStagesSpec
from engine.data.stages.llm.extract_qa import extract_qa
from engine.data.stages.llm.judge import judge
from engine.data.stages.llm.preferences import Writer, preferences
from engine.data.stages.llm.rewrite import rewrite
from engine.records import Conversation, Reject

if TYPE_CHECKING:
    from rich.progress import Progress

    from engine.generation.protocol import GenerationBackend

LLM_STAGES = ("judge", "extract_qa", "rewrite", "preferences")
# stages that yield exactly one item per record, in order (extract_qa adds its pairs after each)
ONE_TO_ONE = ("judge", "rewrite", "preferences")


def stage_model(stage: str, spec: LlmStagesSpec) -> str | None:
    """The model a stage runs on: preferences may name its own (normally the base being tuned)."""
    if stage == "preferences":
        return spec.preferences.model or spec.model
    return spec.model


def stage_on(stage: str, spec: LlmStagesSpec) -> bool:
    """Whether the refine runs `stage`: enabled, and a model to run it on."""
    return getattr(spec, stage).enabled and bool(stage_model(stage, spec))


def run_stage(stage: str, records: Iterable[Conversation], spec: LlmStagesSpec,
              backend: "GenerationBackend", *, notes: list[dict[str, Any]] | None = None,
              writer: Writer | None = None, stats: Counter | None = None,
              progress: "Progress | None" = None) -> Iterator[Conversation | Reject]:
    """Stage `stage` over `records` (batches of spec.batch_size): its items in input order.
    `notes` gets the judge's notes, `writer` the preference rows, `stats` the other stages'
    counts, each before the item of the record they belong to is yielded."""
    if stage == "judge":
        return judge(records, spec, backend, progress=progress, notes=notes)
    if stage == "extract_qa":
        return extract_qa(records, spec, backend, progress=progress, stats=stats)
    if stage == "rewrite":
        return rewrite(records, spec, backend, progress=progress, stats=stats)
    if stage == "preferences":
        assert writer is not None
        return preferences(records, spec, backend, writer, progress=progress, stats=stats)
    raise ValueError(f"unknown LLM stage {stage!r}")


def in_order(stream: Iterable[Conversation], select: Callable[[Conversation], bool],
             run: Callable[[Iterable[Conversation]], Iterable[Conversation | Reject]]
             ) -> Iterator[Conversation | Reject]:
    """A 1:1 stage (`run`) over the records `select` picks, batched among themselves; the others
    pass through in their place. Only the records of the batch in flight wait here."""
    pending: deque[tuple[Conversation, bool]] = deque()

    def picked() -> Iterator[Conversation]:
        for conv in stream:
            chosen = select(conv)
            pending.append((conv, chosen))
            if chosen:
                yield conv

    for item in run(picked()):
        while not pending[0][1]:
            yield pending.popleft()[0]
        pending.popleft()
        yield item
    while pending:  # after the last picked record: none of these is picked
        yield pending.popleft()[0]
