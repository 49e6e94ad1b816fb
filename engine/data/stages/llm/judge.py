"""LLM judge stage: scores each conversation's final reply 1-5 against a rubric; low scores are rejects.

The prompt and the score arithmetic are shared with the eval judges (engine/grading/rubric.py).
The score is the expected value of the digit the model would answer next, over the renormalised
probabilities of the single tokens "1".."5" (backend.choice_logprobs). It is always defined,
even for a weak or random model that would not write a clean digit, and it is continuous, so the
threshold separates records that an argmax would lump together. With `reasons`, the model then
writes one short sentence explaining the score (bounded by reason_max_tokens).

Customer-derived text (the reason) never goes into rejects or logs: each judged record adds an
entry {"id", "score", "probs", "reason"} to `notes`, which the pipeline writes into the dataset
directory (judge.jsonl); the score also goes into conv.meta["judge_score"].
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.config import LlmStagesSpec
from engine.data.stages.llm.backend import StageProgress, batched
from engine.grading.rubric import CHOICES, WHY, judge_prompt, score_from_logprobs
from engine.records import Conversation, Reject

if TYPE_CHECKING:
    from rich.progress import Progress

    from engine.generation.protocol import GenerationBackend

STAGE = "judge"
def judge(records: Iterable[Conversation], spec: LlmStagesSpec, backend: "GenerationBackend", *,
          progress: "Progress | None" = None,
          notes: list[dict[str, Any]] | None = None) -> Iterator[Conversation | Reject]:
    """Score every record (batches of spec.batch_size); yield survivors and rejects in input order.

    A survivor carries meta["judge_score"]; a record scoring below spec.judge.threshold becomes
    Reject(reason="judge_below_threshold", detail="score 2.1342 < 3"). With spec.judge.enabled off
    the records pass through untouched.
    """
    cfg = spec.judge
    if not cfg.enabled:
        yield from records
        return
    bar = StageProgress(progress, "judge")
    for batch in batched(records, spec.batch_size):
        prompts = [judge_prompt(conv, cfg.rubric, spec.max_chars) for conv in batch]
        rows = backend.choice_logprobs(prompts, CHOICES, batch_size=spec.batch_size)
        scored = [score_from_logprobs(r) for r in rows]
        reasons: list[str | None] = [None] * len(batch)
        if cfg.reasons:
            follow = [[*p, {"role": "assistant", "content": str(round(s))},
                       {"role": "user", "content": WHY}] for p, (s, _) in zip(prompts, scored)]
            reasons = list(backend.generate(follow, cfg.reason_max_tokens, spec.batch_size))
        for conv, (score, probs), reason in zip(batch, scored, reasons):
            score = round(score, 4)
            if notes is not None:
                notes.append({"id": conv.id, "score": score,
                              "probs": [round(p, 4) for p in probs], "reason": reason})
            if score < cfg.threshold:
                yield Reject(source=conv.source, stage=STAGE, reason="judge_below_threshold",
                             detail=f"score {score:g} < {cfg.threshold:g}", record_id=conv.id)
            else:
                yield replace(conv, meta={**conv.meta, "judge_score": score})
        bar.advance(len(batch))
    bar.done()
