"""Opening the generation backend for the LLM stages, and their shared prompt/batching helpers.

The backend is the one eval uses (engine/generation/transformers_backend.py): `generate` for
greedy chat answers and `choice_logprobs` for single-token scores. A model is named as in eval: a
model store name (or a run id, whose adapter is merged into its base), resolved by
engine/models/resolve.py. Transcripts for prompts: engine/grading/rubric.py (`transcript`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from engine.generation.protocol import GenerationBackend
from engine.generation.transformers_backend import TransformersBackend
from engine.models.resolve import resolve_model
from engine.records import Conversation
from engine.registry import Registry

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

T = TypeVar("T")
# PII placeholders: <EMAIL>, <PHONE>, <CARD> and numbered surrogates such as <ORDER_1>, <EMAIL_2>.
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*>")


def open_backend(model: str, registry: Registry, tenant: str,
                 threads: int | None = None) -> GenerationBackend:
    """The transformers backend for a model store name or run id (StudioError when unknown)."""
    ref = resolve_model(registry, model, tenant)
    return TransformersBackend(ref.model_dir, ref.adapter_dir, threads=threads)


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Consecutive lists of up to n items (the stages stay streaming, one batch in memory)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def final_assistant(conv: Conversation) -> int | None:
    """Index of the last message when it is the assistant's, else None."""
    if conv.messages and conv.messages[-1]["role"] == "assistant":
        return len(conv.messages) - 1
    return None


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def squash(text: str) -> str:
    """Whitespace-normalised text for comparisons."""
    return " ".join(text.split())


class StageProgress:
    """One progress task per stage (total unknown: the stages stream)."""

    def __init__(self, progress: "Progress | None", label: str):
        self.progress = progress
        self.task: "TaskID | None" = (progress.add_task(label, total=None)
                                      if progress is not None else None)

    def advance(self, n: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, n)

    def done(self) -> None:
        """Give the bar its final total, so it shows as complete."""
        if self.progress is not None and self.task is not None:
            task = next(t for t in self.progress.tasks if t.id == self.task)
            self.progress.update(self.task, total=task.completed)
