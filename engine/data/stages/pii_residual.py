"""PII residual scan: the personal data still present in the records a refine writes (its leak gate).

After every stage (the LLM stages included, which may write personal data back) each record
written to train.jsonl, val.jsonl or eval.jsonl is scanned again with the PII stage's detectors
(engine.data.stages.pii.detect), with every type switched on whatever the config's switches say.
`pii.max_residual` then decides which counts fail the refine (checked in engine/data/refine.py):

  residual_counts(conv, spec) -> Counter   pure: findings per type in one record as written;
                                           `spec` is scan_spec(the config's PiiSpec)
  Residuals                                one refine's tally: findings per type (all counted),
                                           records per type, the ids and input locations of the
                                           first MAX_IDS records per type; the card section and
                                           the gate check (raises engine.errors.PiiLeak)

What is scanned is the text as written: never the conversation's in-flight name hints (they are
not written), and never a placeholder — <EMAIL_1>, <PHONE>, … are masked to their plain,
digit-free token first, so a numbered placeholder can neither match a detector nor lend its digits
to a neighbouring number. Nothing here keeps or reports a value: counts, ids and locations only.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from engine.config import RESIDUAL_SWITCHES, PiiSpec
from engine.data.stages import pii
from engine.errors import PiiLeak
from engine.records import Conversation, SourceRef, message_text

__all__ = ["MAX_IDS", "SHOWN_IDS", "Residuals", "mask_placeholders", "residual_counts", "scan_spec"]

MAX_IDS = 1000  # record ids kept per type (every finding is counted)
SHOWN_IDS = 20  # record ids per type in the card and in the gate's error
_PLACEHOLDER = re.compile(r"<(" + "|".join(t.upper() for t in pii.TYPES) + r")(?:_[0-9]+)?>")


def scan_spec(spec: PiiSpec) -> PiiSpec:
    """`spec` with every detector switched on (its other options kept)."""
    return spec.model_copy(update={switch: True for switch in RESIDUAL_SWITCHES.values()})


def mask_placeholders(text: str) -> str:
    """Every PII placeholder (<EMAIL_1>, <PHONE>, …) as its plain token without digits."""
    return _PLACEHOLDER.sub(r"<\1>", text) if "<" in text else text


def residual_counts(conv: Conversation, spec: PiiSpec) -> Counter[str]:
    """PII findings per type in the message texts of `conv` as written, placeholders masked. Pure."""
    view = Conversation(id=conv.id, source=conv.source, messages=[
        {"role": str(m.get("role", "")), "content": mask_placeholders(message_text(m.get("content")))}
        for m in conv.messages])
    return Counter(f.type for f in pii.detect(view, spec))


def _location(conv: Conversation) -> str:
    src = conv.source
    return src.file if src.line is None else f"{src.file}:{src.line}"


class Residuals:
    """The residual scan of one refine: `add` every written record, then `summary` / `check`."""

    def __init__(self, spec: PiiSpec):
        self.scan = scan_spec(spec)
        self.limits: dict[str, int | None] = spec.max_residual.model_dump()
        self.findings: Counter[str] = Counter()
        self.records: Counter[str] = Counter()
        self.ids: dict[str, list[tuple[str, str]]] = {t: [] for t in pii.TYPES}

    def add(self, conv: Conversation) -> Counter[str]:
        counts = residual_counts(conv, self.scan)
        for kind, n in counts.items():
            self.findings[kind] += n
            self.records[kind] += 1
            if len(self.ids[kind]) < MAX_IDS:
                self.ids[kind].append((conv.id, _location(conv)))
        return counts

    def add_generated(self, record_id: str, file: str, texts: list[str]) -> Counter[str]:
        """Scan text a local model wrote for a record (a preference pair's rejected answer, a
        judge's reason) as it goes into `file`."""
        view = Conversation(id=record_id, source=SourceRef(file, None, record_id),
                            messages=[{"role": "assistant", "content": t} for t in texts])
        return self.add(view)

    def failed(self) -> list[str]:
        """The types whose findings exceed their maximum (a null maximum never fails)."""
        return [t for t in pii.TYPES
                if self.limits.get(t) is not None and self.findings[t] > self.limits[t]]  # type: ignore[operator]

    def summary(self) -> dict[str, dict[str, Any]]:
        """card.json's `pii_residual`: per type findings, records, max, passed, first record ids."""
        failed = set(self.failed())
        return {t: {"count": self.findings[t], "records": self.records[t],
                    "max": self.limits.get(t), "passed": t not in failed,
                    "record_ids": [rid for rid, _ in self.ids[t][:SHOWN_IDS]]}
                for t in pii.TYPES}

    def _max_text(self, kind: str) -> str:
        limit = self.limits.get(kind)
        return "report only" if limit is None else f"max {limit}"

    def check(self) -> None:
        """Raise PiiLeak (exit 3) naming the failing types, counts and records, if any type fails."""
        failed = self.failed()
        if not failed:
            return
        lines = ["PII leak gate failed: the residual scan of the records to be written found "
                 "personal data above pii.max_residual — "
                 + ", ".join(f"{t} {self.findings[t]} ({self._max_text(t)})" for t in failed)
                 + "; no dataset version was written"]
        for t in failed:
            shown = self.ids[t][:SHOWN_IDS]
            more = self.records[t] - len(shown)
            lines.append(f"  {t}: {self.findings[t]} in {self.records[t]} record(s): "
                         + ", ".join(f"{rid} ({where})" for rid, where in shown)
                         + (f" …and {more} more" if more > 0 else ""))
        lines.append("  residual per type: " + ", ".join(
            f"{t} {self.findings[t]} ({self._max_text(t)}{', FAIL' if t in failed else ''})"
            for t in pii.TYPES))
        raise PiiLeak("\n".join(lines), residual=self.summary(), hint=(
            "look at what the LLM stages (llm.rewrite, llm.extract_qa) write back, switch on or "
            "widen the detectors (refine.pii), or, if these findings are acceptable, raise "
            "refine.pii.max_residual.<type> (null: report only)"))
