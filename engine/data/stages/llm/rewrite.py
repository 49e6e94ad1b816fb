"""Rewrite stage: the final assistant turn rewritten into a house style, guarded against damage.

The model sees the style, the conversation so far and the reply, and writes the reply again.
The original is kept (never a reject: the record stays good) when the rewrite is empty, when
its length is outside [min_ratio, max_ratio] × the original's, when it drops a placeholder
(<ORDER_1>, <EMAIL>, …) that the original had or invents one it did not, or when it is the
same text. `stats` counts `rewritten` and `kept_<why>`; a rewritten record has
meta["rewritten"] = True.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from engine.config import LlmRewriteSpec, LlmStagesSpec
from engine.data.stages.llm.backend import (StageProgress, batched, final_assistant, placeholders,
                                            squash)
from engine.grading.rubric import transcript
from engine.records import Conversation

if TYPE_CHECKING:
    from rich.progress import Progress

    from engine.generation.protocol import GenerationBackend

STAGE = "rewrite"
SYSTEM = ("You rewrite customer-support replies into the company's house style. Keep every fact, "
          "number, step and placeholder in angle brackets (like <ORDER_1>) exactly as it is. "
          "Do not add new information.")


def rewrite_prompt(conv: Conversation, last: int, style: str, max_chars: int) -> list[dict[str, str]]:
    context = transcript(conv.messages[:last], max_chars)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"House style:\n{style}\n\nConversation so far:\n{context}\n\n"
                                    f"Agent's reply to rewrite:\n{conv.messages[last]['content']}"
                                    "\n\nWrite only the rewritten reply."},
    ]


def check_rewrite(original: str, new: str, spec: LlmRewriteSpec) -> str | None:
    """Why the rewrite must not replace the original (empty, length, placeholders, unchanged), or None."""
    if not new.strip():
        return "empty"
    ratio = len(new) / max(len(original), 1)
    if ratio < spec.min_ratio or ratio > spec.max_ratio:
        return "length"
    if placeholders(original) != placeholders(new):
        return "placeholders"
    if squash(new) == squash(original):
        return "unchanged"
    return None


def rewrite(records: Iterable[Conversation], spec: LlmStagesSpec, backend: "GenerationBackend", *,
            progress: "Progress | None" = None,
            stats: Counter | None = None) -> Iterator[Conversation]:
    """Yield every record in input order, its final assistant turn rewritten when the rewrite is safe."""
    cfg = spec.rewrite
    if not cfg.enabled:
        yield from records
        return
    stats = stats if stats is not None else Counter()
    bar = StageProgress(progress, "rewrite")
    for batch in batched(records, spec.batch_size):
        lasts = [final_assistant(conv) for conv in batch]
        todo = [i for i, last in enumerate(lasts) if last is not None]
        prompts = [rewrite_prompt(batch[i], lasts[i], cfg.style, spec.max_chars)  # type: ignore[arg-type]
                   for i in todo]
        outputs = dict(zip(todo, backend.generate(prompts, spec.max_new_tokens, spec.batch_size)
                           if prompts else []))
        for i, conv in enumerate(batch):
            last = lasts[i]
            if last is None:
                stats["kept_no_final_reply"] += 1
                yield conv
                continue
            new = outputs[i].strip()
            why = check_rewrite(conv.messages[last]["content"], new, cfg)
            if why is not None:
                stats[f"kept_{why}"] += 1
                yield conv
                continue
            stats["rewritten"] += 1
            messages = [*conv.messages[:last], {**conv.messages[last], "content": new}]
            yield replace(conv, messages=messages, meta={**conv.meta, "rewritten": True})
        bar.advance(len(batch))
    bar.done()
