"""Model judges on a local model: rubric scores, pairwise A/B with position swapping, model graders.

Every judgement is read from the next-token probabilities of single-token answers
(backend.choice_logprobs), as the refine stage's LLM judge does (both use the prompt, anchors and
expected-score arithmetic of engine/grading/rubric.py): always parseable, even for a
weak model, deterministic and batched. A rationale, when asked for, is one greedy sentence the
model writes after its verdict.

  judge_single    rubric score 1-5 of one answer → score (rating - 1) / 4 in [0, 1]
  judge_pairwise  base vs tuned answer, asked in BOTH orders (A = base, then A = tuned). Per order
                  the verdict is the answer with probability > 0.5; when the two orders agree the
                  item is consistent and that answer wins, otherwise (position bias) it is a tie.
                  Identical answers are a tie without asking the model.
  score_model / label_model   the OpenAI model graders (graders.grade_batch calls these)

Answers, prompts and rationales are customer text: they go into the results, never into logs or
errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from engine.config import DEFAULT_JUDGE_RUBRIC
from engine.grading.result import GradeResult
from engine.grading.rubric import CHOICES, WHY, judge_prompt, score_from_logprobs, transcript
from engine.records import Conversation, SourceRef

if TYPE_CHECKING:
    from engine.generation.protocol import GenerationBackend

Winner = Literal["base", "tuned", "tie"]
PAIR_CHOICES = ["A", "B"]
PAIR_SYSTEM = ("You are an impartial reviewer of customer-support replies. You compare two replies "
               "to the same conversation and answer with a single letter, A or B.")
PAIR_WHY = "In one short sentence, why is that reply better?"
SCORE_ASK = "Answer with a single digit from 1 (worst) to 5 (best)."
# the default rubric of a pairwise judgement: the refine judge's criteria without its 1-5 scale
PAIR_RUBRIC = "\n".join(line for line in DEFAULT_JUDGE_RUBRIC.splitlines()
                        if not line.startswith("Score "))


@dataclass
class JudgeResult:
    item_id: str
    score: float               # (rating - 1) / 4, in [0, 1]
    rating: float              # expected rating on the 1-5 scale
    probs: list[float]         # probabilities of "1".."5", renormalised
    rationale: str | None = None


@dataclass
class PairwiseResult:
    item_id: str
    winner: Winner
    consistent: bool           # both orders chose the same answer (identical answers: True)
    p_tuned: float             # mean over the two orders of P(tuned answer is better)
    p_tuned_by_order: tuple[float, float]  # (base shown first as A, tuned shown first as A)
    identical: bool = False
    rationale: str | None = None  # from the base-first order: "A" is base, "B" is tuned


@dataclass
class PairwiseReport:
    results: list[PairwiseResult]
    n: int
    tuned_wins: int
    base_wins: int
    ties: int
    n_identical: int
    consistency_rate: float | None  # share of judged (non-identical) items whose orders agree
    tuned_win_rate: float | None    # (tuned wins + ties / 2) / n
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------- helpers
def _messages(prompt: Any) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def _item_id(item: Mapping[str, Any], index: int) -> str:
    value = item.get("item_id", item.get("id"))
    return str(value) if value is not None else str(index)


def _rationales(backend: "GenerationBackend", prompts: list[list[dict[str, str]]], answers: list[str],
                question: str, max_tokens: int, batch_size: int) -> list[str | None]:
    if max_tokens <= 0 or not prompts:
        return [None] * len(prompts)
    follow = [[*p, {"role": "assistant", "content": a}, {"role": "user", "content": question}]
              for p, a in zip(prompts, answers)]
    return [str(r) for r in backend.generate(follow, max_tokens, batch_size)]


def _softmax(logprobs: Sequence[float]) -> list[float]:
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def _with_instruction(prompt: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    """The prompt with `text` appended to its last user message (or as a new user message)."""
    msgs = [dict(m) for m in prompt]
    if msgs and msgs[-1]["role"] == "user":
        msgs[-1]["content"] = f"{msgs[-1]['content']}\n\n{text}"
    else:
        msgs.append({"role": "user", "content": text})
    return msgs


# ------------------------------------------------------------------------------- single answer
def single_prompt(item: Mapping[str, Any], rubric: str, max_chars: int = 2000,
                  with_reference: bool = False) -> list[dict[str, str]]:
    """The refine judge's prompt (rubric, two anchors, the transcript) for prompt + answer."""
    if with_reference and item.get("reference"):
        rubric = f"{rubric}\n\nA reference reply for this conversation: {item['reference']}"
    conv = Conversation(id="", source=SourceRef(file="eval"),
                        messages=[*_messages(item["prompt"]),
                                  {"role": "assistant", "content": str(item["output"])}])
    return judge_prompt(conv, rubric, max_chars)


def judge_single(backend: "GenerationBackend", items: Sequence[Mapping[str, Any]], rubric: str, *,
                 batch_size: int = 8, max_chars: int = 2000, rationale_tokens: int = 48,
                 with_reference: bool = False) -> list[JudgeResult]:
    """Rate each item's `output` (an answer to its `prompt`: messages or text) 1-5 on the rubric.

    Items are mappings with item_id, prompt, output (and reference, used when with_reference).
    rationale_tokens=0 skips the rationales (one generate pass fewer).
    """
    prompts = [single_prompt(it, rubric, max_chars, with_reference) for it in items]
    rows = backend.choice_logprobs(prompts, CHOICES, batch_size=batch_size) if prompts else []
    scored = [score_from_logprobs(r) for r in rows]
    reasons = _rationales(backend, prompts, [str(round(s)) for s, _ in scored], WHY,
                          rationale_tokens, batch_size)
    return [JudgeResult(_item_id(it, i), round((rating - 1.0) / 4.0, 6), round(rating, 6),
                        [round(p, 6) for p in probs], reason)
            for i, (it, (rating, probs), reason) in enumerate(zip(items, scored, reasons))]


# ------------------------------------------------------------------------------------ pairwise
def pairwise_prompt(prompt: Any, answer_a: str, answer_b: str, rubric: str,
                    max_chars: int = 2000) -> list[dict[str, str]]:
    """The chat prompt whose next token is the better reply's letter."""
    convo = transcript(_messages(prompt), max_chars)

    def clip(text: str) -> str:
        return text if len(text) <= max_chars else text[:max_chars] + "[…]"

    return [
        {"role": "system", "content": PAIR_SYSTEM},
        {"role": "user", "content": f"{rubric}\n\nConversation:\n{convo}\n\nReply A:\n{clip(answer_a)}"
                                    f"\n\nReply B:\n{clip(answer_b)}\n\nWhich reply is better, A or B?"
                                    "\nBetter reply:"},
    ]


def verdict(p_tuned: float) -> Winner:
    return "tuned" if p_tuned > 0.5 else "base" if p_tuned < 0.5 else "tie"


def combine_orders(p_tuned_base_first: float, p_tuned_tuned_first: float) -> tuple[Winner, bool]:
    """(winner, consistent) from P(tuned better) asked with base as A, then with tuned as A."""
    first, second = verdict(p_tuned_base_first), verdict(p_tuned_tuned_first)
    consistent = first == second
    return (first if consistent else "tie"), consistent


def judge_pairwise(backend: "GenerationBackend", items: Sequence[Mapping[str, Any]], rubric: str, *,
                   batch_size: int = 8, max_chars: int = 2000,
                   rationale_tokens: int = 48) -> PairwiseReport:
    """Judge base vs tuned per item, both orders, and summarise.

    Items are mappings with item_id, prompt (messages or text), base and tuned (the two answers).
    """
    todo = [i for i, it in enumerate(items) if str(it["base"]) != str(it["tuned"])]
    prompts: list[list[dict[str, str]]] = []
    for i in todo:  # two prompts per item: base first (A = base), then tuned first (A = tuned)
        it = items[i]
        prompts.append(pairwise_prompt(it["prompt"], str(it["base"]), str(it["tuned"]), rubric, max_chars))
        prompts.append(pairwise_prompt(it["prompt"], str(it["tuned"]), str(it["base"]), rubric, max_chars))
    rows = backend.choice_logprobs(prompts, PAIR_CHOICES, batch_size=batch_size) if prompts else []
    probs = [_softmax(r) for r in rows]  # [P(A), P(B)]
    firsts = prompts[0::2]
    letters = ["B" if probs[2 * k][1] > probs[2 * k][0] else "A" for k in range(len(todo))]
    reasons = _rationales(backend, firsts, letters, PAIR_WHY, rationale_tokens, batch_size)
    judged: dict[int, PairwiseResult] = {}
    for k, i in enumerate(todo):
        p1 = round(probs[2 * k][1], 6)      # base first: tuned is B
        p2 = round(probs[2 * k + 1][0], 6)  # tuned first: tuned is A
        winner, consistent = combine_orders(p1, p2)
        judged[i] = PairwiseResult(_item_id(items[i], i), winner, consistent,
                                   round((p1 + p2) / 2, 6), (p1, p2), False, reasons[k])
    results = [judged.get(i) or PairwiseResult(_item_id(it, i), "tie", True, 0.5, (0.5, 0.5), True)
               for i, it in enumerate(items)]
    return summarize_pairwise(results)


def summarize_pairwise(results: list[PairwiseResult]) -> PairwiseReport:
    n = len(results)
    tuned = sum(r.winner == "tuned" for r in results)
    base = sum(r.winner == "base" for r in results)
    ties = n - tuned - base
    judged = [r for r in results if not r.identical]
    consistent = sum(r.consistent for r in judged)
    return PairwiseReport(
        results=results, n=n, tuned_wins=tuned, base_wins=base, ties=ties,
        n_identical=n - len(judged),
        consistency_rate=round(consistent / len(judged), 6) if judged else None,
        tuned_win_rate=round((tuned + ties / 2) / n, 6) if n else None,
        counts={"judged": len(judged), "consistent": consistent,
                "inconsistent": len(judged) - consistent})


# ------------------------------------------------------------------------------ OpenAI graders
def score_model(backend: "GenerationBackend", prompts: list[list[dict[str, str]]], score_range: tuple[float, float],
                pass_threshold: float | None, *, batch_size: int = 8) -> list[GradeResult]:
    """OpenAI score_model on a local model: the grader's messages plus an instruction to answer a
    digit 1-5; the expected digit maps linearly onto `score_range` (raw) and onto [0, 1] (score)."""
    asked = [_with_instruction(p, SCORE_ASK) for p in prompts]
    rows = backend.choice_logprobs(asked, CHOICES, batch_size=batch_size) if asked else []
    lo, hi = score_range
    out = []
    for row in rows:
        rating, probs = score_from_logprobs(row)
        score = round((rating - 1.0) / 4.0, 6)
        raw = round(lo + score * (hi - lo), 6)
        out.append(GradeResult(score, None if pass_threshold is None else raw >= pass_threshold,
                               {"raw": raw, "rating": round(rating, 6),
                                "probs": [round(p, 6) for p in probs]}))
    return out


def label_model(backend: "GenerationBackend", prompts: list[list[dict[str, str]]], labels: list[str],
                passing_labels: list[str], *, batch_size: int = 8) -> list[GradeResult]:
    """OpenAI label_model on a local model: the labels are numbered 1..k and the most probable
    number is the label (first on ties); it passes when it is one of passing_labels."""
    menu = "\n".join(f"{i}. {label}" for i, label in enumerate(labels, 1))
    ask = f"Answer with the number of exactly one label:\n{menu}"
    choices = [str(i) for i in range(1, len(labels) + 1)]
    asked = [_with_instruction(p, ask) for p in prompts]
    rows = backend.choice_logprobs(asked, choices, batch_size=batch_size) if asked else []
    out = []
    for row in rows:
        probs = _softmax(row)
        best = max(range(len(labels)), key=lambda j: (probs[j], -j))
        ok = labels[best] in passing_labels
        out.append(GradeResult(1.0 if ok else 0.0, ok,
                               {"label": labels[best], "probs": [round(p, 6) for p in probs]}))
    return out
