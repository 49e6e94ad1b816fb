"""LLM judge stage: scores each conversation's final reply 1-5 against a rubric; low scores are rejects.

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

import math
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.config import LlmStagesSpec
from engine.data.stages.llm.backend import StageProgress, batched, transcript
from engine.records import Conversation, Reject

if TYPE_CHECKING:
    from rich.progress import Progress

    from engine.eval.generate import Backend

STAGE = "judge"
CHOICES = ["1", "2", "3", "4", "5"]
SYSTEM = ("You are a strict reviewer of customer-support replies. You answer with a single digit "
          "from 1 to 5.")
# Two fixed anchors for the ends of the scale: small models rank replies much better with them
# (SmolLM2-135M ordered 5/5 good-vs-useless pairs right with them, 1/5 to 4/5 without).
ANCHORS = ("Example 1:\nCustomer: My order has not arrived yet.\nAgent: no idea\nScore: 1\n\n"
           "Example 2:\nCustomer: My order has not arrived yet.\nAgent: Sorry about the delay! "
           "Your order shipped on Monday and the carrier expects to deliver it tomorrow. You can "
           "follow it with the tracking link in your confirmation email.\nScore: 5\n\n")
WHY = "In one short sentence, why did you give this score?"


def judge_prompt(conv: Conversation, rubric: str, max_chars: int) -> list[dict[str, str]]:
    """The chat prompt whose next token is the score: rubric, anchors, then the conversation."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{rubric}\n\n{ANCHORS}Now rate this one.\n"
                                    f"{transcript(conv.messages, max_chars)}\nScore:"},
    ]


def score_from_logprobs(logprobs: list[float]) -> tuple[float, list[float]]:
    """(expected score, probabilities renormalised over the 5 choices)."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    probs = [w / total for w in weights]
    return sum((i + 1) * p for i, p in enumerate(probs)), probs


def judge(records: Iterable[Conversation], spec: LlmStagesSpec, backend: "Backend", *,
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
