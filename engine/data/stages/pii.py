"""PII stage: detection of personal data (pure, per record) and consistent surrogate placeholders.

Two halves, so that detection can run in worker processes and numbering stays deterministic:

  detect(conv, spec) -> [Finding]        pure; Findings are small frozen (picklable) dataclasses
  Surrogates().apply(conv, findings)     main process, in input order: each finding becomes
                                         <EMAIL_1>, <PHONE_2>, <PERSON_3>, … numbered per type in
                                         order of first appearance over the whole refine; the same
                                         canonical value always gets the same placeholder

Types (TYPES) and their canonical values:
  email    lower-cased address
  phone    E.164 from libphonenumber, plus ";ext=N" (+49 30 1234567 and 0049 30 1234567 are one
           number)
  card     digits only; 13-19 digits passing the Luhn check
  iban     compact upper-case; country length (ISO 13616 registry) + mod-97 check (any case)
  ip       the compressed address; IPv4 (octets <= 255) and IPv6 (full and compressed)
  address  the street part (house number + street, no unit/postcode/city), whitespace collapsed,
           case-folded, the suffix as its Pub 28 abbreviation: "12 Oak Lane, Springfield" and
           "12 OAK LN" are one address
  person   the full name (a first or last name alone maps to the full name it belongs to)

Overlapping candidates are resolved per turn: the longest span wins (an address keeps its ZIP+4,
an IBAN its digits), then the higher-ranked type (email, iban, card, ip, phone, address, person),
then the earlier one.

False-positive protections (precision first) are documented per detector in docs/refine.md
("PII") and in the detector modules' docstrings.

Modules: this one owns the stage's types, findings, overlap resolution, `detect` and the
surrogates; the pattern detectors live in engine/data/stages/pii_detect.py (e-mails, cards, IBANs,
IPs), pii_phones.py (libphonenumber), pii_address.py (+ pii_pub28.py, the USPS tables); names from
hints, signatures and greetings in pii_names.py, names in free text in pii_person.py. The residual
scan of the output is pii_residual.py. `engine.data.stages.pii` stays the stage's one entry point.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from engine.config import PiiSpec
from engine.data.stages.pii_detect import _scan, iban_ok, luhn_ok
from engine.data.stages.pii_phones import is_phone
from engine.data.stages.pii_person import free_text_names
from engine.data.stages.pii_names import _known_names, _name_table, _occurrences, known_names
from engine.records import Conversation, SourceRef

__all__ = ["STAGE", "TOKENS", "TYPES", "Finding", "PiiStats", "Surrogates", "detect", "iban_ok", "is_phone",
           "known_names", "luhn_ok", "redact", "redact_conversation", "redact_text"]

STAGE = "pii"
TYPES = ("email", "phone", "card", "iban", "ip", "address", "person")
TOKENS = {t: f"<{t.upper()}>" for t in TYPES}
_RANK = {"email": 0, "iban": 1, "card": 2, "ip": 3, "phone": 4, "address": 5, "person": 6}


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected value: turn index, [start, end) in that turn's content, type, canonical value."""

    turn: int
    start: int
    end: int
    type: str
    value: str


# ---------------------------------------------------------------------------------- detect
def _resolve(turn: int, cands: list[tuple[int, int, str, str]]) -> list[Finding]:
    """Drop overlaps: the longer span, then the higher-ranked type, then the earlier one wins."""
    cands.sort(key=lambda c: (c[0] - c[1], _RANK[c[2]], c[0]))
    kept: list[tuple[int, int, str, str]] = []
    for c in cands:
        if all(c[1] <= k[0] or c[0] >= k[1] for k in kept):
            kept.append(c)
    kept.sort()
    return [Finding(turn, s, e, t, v) for s, e, t, v in kept]


def detect(conv: Conversation, spec: PiiSpec) -> list[Finding]:
    """Every PII finding in `conv`, sorted by (turn, start), never overlapping. Pure."""
    texts = [m.get("content") or "" for m in conv.messages]
    cands = [_scan(t, spec) for t in texts]
    if spec.names:
        names = _known_names(conv, texts)
        if spec.names_in_text:
            names += [n for n in free_text_names(texts) if n not in names]
        table = _name_table(names)
        if table:
            for i, text in enumerate(texts):
                for surface, canonical in table.items():
                    for start, end in _occurrences(text, surface):
                        cands[i].append((start, end, "person", canonical))
    findings: list[Finding] = []
    for i, c in enumerate(cands):
        if c:
            findings.extend(_resolve(i, c))
    return findings


# ------------------------------------------------------------------------------ surrogates
class IdStore(Protocol):
    """Where Surrogates keeps (type, canonical value) → placeholder."""

    def get(self, key: tuple[str, str]) -> str | None: ...

    def __setitem__(self, key: tuple[str, str], placeholder: str) -> None: ...


class Surrogates:
    """Consistent placeholders for the whole refine: same (type, canonical value) → same placeholder.

    numbered=False gives the plain tokens (<EMAIL>, <PHONE>, …). `mapping` (placeholder → the
    distinct original strings it replaced, in first-seen order) is kept only when keep_originals
    is true — it is what the encrypted vault stores.
    """

    def __init__(self, numbered: bool = True, keep_originals: bool = True,
                 ids: "IdStore | None" = None):
        self.numbered = numbered
        self.keep_originals = keep_originals
        self.mapping: dict[str, list[str]] = {}
        # (type, value) → placeholder: a dict, or a store on disk (engine/data/surrogate_store.py)
        self._ids: IdStore = ids if ids is not None else {}
        self._next: Counter[str] = Counter()

    @classmethod
    def for_spec(cls, spec: PiiSpec, ids: "IdStore | None" = None) -> "Surrogates":
        return cls(numbered=spec.surrogates, keep_originals=spec.vault == "encrypted", ids=ids)

    def placeholder(self, kind: str, value: str) -> str:
        if not self.numbered:
            return TOKENS[kind]
        key = (kind, value)
        ph = self._ids.get(key)
        if ph is None:
            self._next[kind] += 1
            ph = self._ids[key] = f"<{kind.upper()}_{self._next[kind]}>"
        return ph

    def _remember(self, ph: str, original: str) -> None:
        seen = self.mapping.setdefault(ph, [])
        if original not in seen:
            seen.append(original)

    def apply(self, conv: Conversation, findings: list[Finding]) -> tuple[Conversation, Counter]:
        """`conv` with every finding replaced (input not mutated), and the count per type."""
        counts: Counter = Counter()
        if not findings:
            return conv, counts
        by_turn: dict[int, list[Finding]] = {}
        for f in findings:
            by_turn.setdefault(f.turn, []).append(f)
        messages = list(conv.messages)
        for turn in sorted(by_turn):
            content = messages[turn]["content"]
            parts: list[str] = []
            last = 0
            for f in sorted(by_turn[turn], key=lambda f: f.start):
                if f.start < last:  # overlapping findings: detect never produces them
                    continue
                ph = self.placeholder(f.type, f.value)
                if self.keep_originals:
                    self._remember(ph, content[f.start:f.end])
                parts.append(content[last:f.start])
                parts.append(ph)
                last = f.end
                counts[f.type] += 1
            parts.append(content[last:])
            messages[turn] = {**messages[turn], "content": "".join(parts)}
        return replace(conv, messages=messages), counts


# ----------------------------------------------------------------------------- convenience
@dataclass
class PiiStats:
    """Totals per type, and per record id (only records with at least one redaction)."""

    totals: Counter = field(default_factory=Counter)
    per_record: dict[str, dict[str, int]] = field(default_factory=dict)
    records_redacted: int = 0

    def add(self, record_id: str, counts: Counter) -> None:
        if counts:
            self.totals.update(counts)
            self.per_record[record_id] = {k: counts[k] for k in sorted(counts)}
            self.records_redacted += 1


def redact_conversation(conv: Conversation, spec: PiiSpec,
                        surrogates: Surrogates | None = None) -> tuple[Conversation, Counter]:
    surrogates = surrogates if surrogates is not None else Surrogates.for_spec(spec)
    return surrogates.apply(conv, detect(conv, spec))


def redact(records: Iterable[Conversation], spec: PiiSpec, stats: PiiStats | None = None,
           surrogates: Surrogates | None = None) -> Iterator[Conversation]:
    """Single-process detect + apply over `records`, in order (one Surrogates for the stream)."""
    surrogates = surrogates if surrogates is not None else Surrogates.for_spec(spec)
    for conv in records:
        out, counts = surrogates.apply(conv, detect(conv, spec))
        if stats is not None:
            stats.add(conv.id, counts)
        yield out


def redact_text(text: str, spec: PiiSpec,
                surrogates: Surrogates | None = None) -> tuple[str, Counter]:
    """(redacted text, Counter per type) for one piece of text (numbering restarts per call
    unless a Surrogates is passed)."""
    conv = Conversation(id="text", messages=[{"role": "user", "content": text}],
                        source=SourceRef("<text>"))
    out, counts = redact_conversation(conv, spec, surrogates)
    return out.messages[0]["content"], counts
