"""Preference synthesis: DPO pairs of the golden final answer (chosen) vs the model's own (rejected).

For every conversation ending in an assistant turn, the prompt is everything before that turn;
the backend (the base model to be tuned, normally) answers it greedily. When its answer differs
from the golden one after whitespace normalisation, one row in OpenAI's preference format goes
to `writer`:

    {"input": {"messages": [...]},
     "preferred_output": [{"role": "assistant", "content": golden}],
     "non_preferred_output": [{"role": "assistant", "content": model answer}]}

which engine/train/data.py reads as `openai_preference`. Records pass through unchanged.
`stats` counts `pairs`, `identical`, `empty` (the model said nothing) and `no_prompt` (no final
assistant turn, no user turn before it, or a role other than system/user/assistant).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from engine.config import LlmStagesSpec
from engine.data.stages.llm.backend import StageProgress, batched, final_assistant, squash
from engine.records import ROLES, Conversation

if TYPE_CHECKING:
    from rich.progress import Progress

    from engine.generation.protocol import GenerationBackend

STAGE = "preferences"
Writer = Callable[[str, dict[str, Any]], None]


def preference_row(prompt: list[dict[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
    """One OpenAI-format DPO row."""
    return {"input": {"messages": [{"role": m["role"], "content": m["content"]} for m in prompt]},
            "preferred_output": [{"role": "assistant", "content": chosen}],
            "non_preferred_output": [{"role": "assistant", "content": rejected}]}


def _prompt_of(conv: Conversation) -> list[dict[str, str]] | None:
    last = final_assistant(conv)
    if last is None or not any(m["role"] == "user" for m in conv.messages[:last]):
        return None
    if any(m["role"] not in ROLES for m in conv.messages[:last]):  # e.g. kept tool turns
        return None
    return conv.messages[:last]


def preferences(records: Iterable[Conversation], spec: LlmStagesSpec, backend: "GenerationBackend",
                writer: Writer, *, progress: "Progress | None" = None,
                stats: Counter | None = None) -> Iterator[Conversation]:
    """Yield every record unchanged; call writer(record id, row) for each pair, in input order."""
    cfg = spec.preferences
    if not cfg.enabled:
        yield from records
        return
    stats = stats if stats is not None else Counter()
    max_new = cfg.max_new_tokens or spec.max_new_tokens
    bar = StageProgress(progress, "preferences")
    for batch in batched(records, spec.batch_size):
        prompts = [_prompt_of(conv) for conv in batch]
        todo = [i for i, p in enumerate(prompts) if p is not None]
        answers = dict(zip(todo, backend.generate([prompts[i] for i in todo], max_new,  # type: ignore[misc]
                                                  spec.batch_size) if todo else []))
        for i, conv in enumerate(batch):
            prompt = prompts[i]
            if prompt is None:
                stats["no_prompt"] += 1
            else:
                golden, own = conv.messages[-1]["content"], answers[i].strip()
                if not own:
                    stats["empty"] += 1
                elif squash(own) == squash(golden):
                    stats["identical"] += 1
                else:
                    stats["pairs"] += 1
                    writer(conv.id, preference_row(prompt, golden, own))
            yield conv
        bar.advance(len(batch))
    bar.done()
