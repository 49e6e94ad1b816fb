"""Q/A extraction stage: standalone question/answer pairs from long transcripts, as new records.

For each conversation with at least `min_turns` non-system turns the model is asked for pairs
in a strict format:

    Q: <a question a customer could ask on its own>
    A: <the answer the agent gave, self-contained>

(or the single word NONE). `parse_pairs` reads that format; text it cannot read yields no
pairs and is counted as `unparseable`, never an error. A parsed pair is dropped when the
question or answer is too short, when it is a repeat, when it names a placeholder (<ORDER_1>…)
that the transcript does not have, or when fewer than `min_grounding` of its answer's words
occur in the transcript (a guard against invented answers). Each kept pair becomes a
Conversation with id "<source id>-qa<k>" (k = 1, 2, … in output order), the source's
SourceRef and meta, and meta["extracted_from"] = source id; the source's system message, if
any, is kept in front.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from engine.config import LlmExtractQaSpec, LlmStagesSpec
from engine.data.stages.llm.backend import StageProgress, batched, placeholders, squash
from engine.grading.rubric import transcript
from engine.records import Conversation, Reject

if TYPE_CHECKING:
    from rich.progress import Progress

    from engine.generation.protocol import GenerationBackend

STAGE = "extract_qa"
SYSTEM = ("You turn customer-support transcripts into standalone FAQ entries. Each question must "
          "make sense without the transcript; each answer must only use what the agent said.")
MIN_QUESTION, MIN_ANSWER = 8, 4
_LINE = re.compile(r"^\s*(?:[-*]\s*|\d+[.)]\s*)?(?:\*\*)?(Q|A|Question|Answer)(?:\*\*)?\s*[:：]"
                   r"(?:\*\*)?\s*(.*)$", re.I)
_WORD = re.compile(r"\w+")


def extract_prompt(conv: Conversation, max_pairs: int, max_chars: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Transcript:\n{transcript(conv.messages, max_chars)}\n\n"
                                    f"Write up to {max_pairs} question/answer pairs, each as two "
                                    "lines:\nQ: <question>\nA: <answer>\nSeparate pairs with a "
                                    "blank line. Write NONE if there is nothing reusable."},
    ]


def parse_pairs(text: str) -> list[tuple[str, str]] | None:
    """The (question, answer) pairs in `text`; [] for an explicit NONE; None when unreadable.

    A pair is a `Q:` line followed by an `A:` line (labels may also be Question/Answer, in any
    case, optionally bulleted, numbered or bold); an answer continues over the following lines
    until the next label. A question without an answer is skipped.
    """
    if squash(text).strip(" .").upper() == "NONE":
        return []
    pairs: list[tuple[str, str]] = []
    question: list[str] | None = None
    answer: list[str] | None = None

    def flush() -> None:
        if question is not None and answer is not None:
            q, a = squash(" ".join(question)), "\n".join(answer).strip()
            if q and a:
                pairs.append((q, a))

    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1)[0].upper() == "Q":
            flush()
            question, answer = [m.group(2).strip()], None
        elif m and question is not None and answer is None:
            answer = [m.group(2).strip()]
        elif answer is not None and not m:
            answer.append(line.rstrip())
        elif question is not None and answer is None and not m and line.strip():
            question.append(line.strip())  # a question wrapped over two lines
    flush()
    return pairs or None


def grounding(answer: str, source: str) -> float:
    """Share of the answer's words (casefolded) that occur in the source text."""
    words = [w.casefold() for w in _WORD.findall(answer)]
    if not words:
        return 0.0
    vocab = {w.casefold() for w in _WORD.findall(source)}
    return sum(w in vocab for w in words) / len(words)


def keep_pairs(pairs: list[tuple[str, str]], conv: Conversation, spec: LlmExtractQaSpec,
               stats: Counter) -> list[tuple[str, str]]:
    """The pairs that pass the length, repeat, placeholder and grounding checks (counted in stats)."""
    source = "\n".join(m["content"] for m in conv.messages)
    known = placeholders(source)
    kept: list[tuple[str, str]] = []
    seen: set[str] = set()
    for q, a in pairs:
        key = squash(q).casefold()
        if len(q) < MIN_QUESTION or len(a) < MIN_ANSWER:
            stats["pairs_too_short"] += 1
        elif key in seen:
            stats["pairs_repeated"] += 1
        elif not placeholders(q + "\n" + a) <= known:
            stats["pairs_invented_placeholder"] += 1
        elif grounding(a, source) < spec.min_grounding:
            stats["pairs_ungrounded"] += 1
        elif len(kept) >= spec.max_pairs:
            stats["pairs_over_max"] += 1
        else:
            seen.add(key)
            kept.append((q, a))
    return kept


def pair_records(conv: Conversation, pairs: list[tuple[str, str]]) -> list[Conversation]:
    system = [m for m in conv.messages[:1] if m["role"] == "system"]
    return [Conversation(id=f"{conv.id}-qa{k}",
                         messages=[*system, {"role": "user", "content": q},
                                   {"role": "assistant", "content": a}],
                         source=conv.source, meta={**conv.meta, "extracted_from": conv.id})
            for k, (q, a) in enumerate(pairs, 1)]


def _long(conv: Conversation, min_turns: int) -> bool:
    return sum(m["role"] != "system" for m in conv.messages) >= min_turns


def extract_qa(records: Iterable[Conversation], spec: LlmStagesSpec, backend: "GenerationBackend", *,
               progress: "Progress | None" = None,
               stats: Counter | None = None) -> Iterator[Conversation | Reject]:
    """Yield each record followed by the pairs extracted from it, in input order.

    With keep_source off, a transcript that gave at least one pair is replaced by its pairs
    (Reject reason "replaced_by_qa", detail "3 pairs"); one that gave none is kept.
    """
    cfg = spec.extract_qa
    if not cfg.enabled:
        yield from records
        return
    stats = stats if stats is not None else Counter()
    bar = StageProgress(progress, "extract Q/A")
    for batch in batched(records, spec.batch_size):
        todo = [i for i, conv in enumerate(batch) if _long(conv, cfg.min_turns)]
        prompts = [extract_prompt(batch[i], cfg.max_pairs, spec.max_chars) for i in todo]
        outputs = dict(zip(todo, backend.generate(prompts, spec.max_new_tokens, spec.batch_size)
                           if prompts else []))
        for i, conv in enumerate(batch):
            if i not in outputs:
                yield conv
                continue
            stats["transcripts"] += 1
            parsed = parse_pairs(outputs[i])
            if parsed is None:
                stats["unparseable"] += 1
            elif not parsed:
                stats["none"] += 1
            new = pair_records(conv, keep_pairs(parsed or [], conv, cfg, stats))
            stats["pairs"] += len(new)
            if new and not cfg.keep_source:
                yield Reject(source=conv.source, stage=STAGE, reason="replaced_by_qa",
                             detail=f"{len(new)} pairs", record_id=conv.id)
            else:
                yield conv
            yield from new
        bar.advance(len(batch))
    bar.done()
