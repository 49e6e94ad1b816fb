"""The per-record refine stages (normalize → turns → quality → PII detection), in one process or many.

Each record is processed independently, so this chain runs in worker processes when
`refine.workers > 1`: records travel in chunks, at most a few chunks per worker are in flight
(memory stays bounded however large the input), and results come back in input order, so the
output is byte-identical to a single-process run. Everything that needs global state — PII
surrogate numbering, dedup, split, decontamination, LLM stages — runs afterwards in the main
process (engine/data/refine.py).

Ingest rejects pass through unchanged, in order. A record rejected by quality comes back with its
reject and, for the data card's examples, no PII findings applied (the pipeline redacts examples
with plain placeholders).
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any

from engine.config import RefineSpec
from engine.data.stages import pii, quality, turns
from engine.data.stages.normalize import normalize_conversation
from engine.privacy.jobs import signals_held
from engine.records import Conversation, Reject

CHUNK = 256


@dataclass
class Outcome:
    """What the per-record chain did to one record."""

    conv: Conversation
    changed_by: list[str] = field(default_factory=list)
    events: Counter = field(default_factory=Counter)  # "<stage>.<event>" → count
    reject: Reject | None = None
    findings: list[Any] = field(default_factory=list)  # pii.Finding


def add_system_prompt(conv: Conversation, prompt: str | None) -> Conversation | None:
    """A copy with `prompt` as first message when the conversation has no system message."""
    if prompt and not any(m["role"] == "system" for m in conv.messages):
        return replace(conv, messages=[{"role": "system", "content": prompt}, *conv.messages])
    return None


def process(conv: Conversation, spec: RefineSpec) -> Outcome:
    out = Outcome(conv)
    with_prompt = add_system_prompt(conv, spec.system_prompt)
    if with_prompt is not None:
        out.conv = with_prompt
        out.changed_by.append("system_prompt")
        out.events["system_prompt.added"] += 1

    normalized, dropped = normalize_conversation(out.conv, spec.normalize)
    if normalized.messages != out.conv.messages:
        out.changed_by.append("normalize")
    out.events["normalize.turns_dropped"] += dropped
    out.conv = normalized

    if spec.pii.names:  # names seen only in signature blocks survive the turns stage as hints
        names = pii.known_names(out.conv)
        if names:
            out.conv = replace(out.conv, hints={**out.conv.hints, "names": names})
    cleaned, done = turns.clean_turns(out.conv, spec.turns)
    if cleaned.messages != out.conv.messages:
        out.changed_by.append("turns")
    for key, n in done.items():
        out.events[f"turns.{key}"] += n
    out.conv = cleaned

    failed = quality.check(out.conv, spec.quality)
    if failed is not None:
        out.reject = Reject(source=out.conv.source, stage="quality", reason=failed[0],
                            detail=failed[1], record_id=out.conv.id)
        return out
    out.findings = pii.detect(out.conv, spec.pii)
    return out


def _worker_start() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool


def _run_chunk(args: tuple[list[Conversation | Reject], RefineSpec]) -> list[Outcome | Reject]:
    items, spec = args
    return [item if isinstance(item, Reject) else process(item, spec) for item in items]


def _chunks(stream: Iterable[Conversation | Reject], size: int) -> Iterator[list[Any]]:
    it = iter(stream)
    while chunk := list(islice(it, size)):
        yield chunk


def run(stream: Iterable[Conversation | Reject], spec: RefineSpec,
        workers: int = 1) -> Iterator[Outcome | Reject]:
    """Outcomes (and passed-through ingest rejects) in input order."""
    if workers <= 1:
        for item in stream:
            yield item if isinstance(item, Reject) else process(item, spec)
        return
    # spawn: the parent may hold threads (torch, tokenizers) that fork would copy half-locked
    ctx = multiprocessing.get_context("spawn")
    pool = None
    try:
        # a signal inside Pool() would leave half-started workers behind: it is delivered here,
        # once the pool exists, so the `finally` below stops and joins them
        with signals_held():
            pool = ctx.Pool(workers, initializer=_worker_start)
        pending: deque[Any] = deque()
        chunks = _chunks(stream, CHUNK)
        window = 2 * workers
        for chunk in chunks:
            pending.append(pool.apply_async(_run_chunk, ((chunk, spec),)))
            if len(pending) >= window:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()
        pool.close()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
