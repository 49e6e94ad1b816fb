"""PII stage: regex redaction of emails (<EMAIL>), Luhn-valid cards (<CARD>) and phone numbers (<PHONE>).

Order matters: emails first, then cards, then phones (so a card is never half-eaten as a phone).
Cards: runs of digit groups separated by single spaces/dashes; any contiguous span of groups with
13-19 digits (every group 3-6 digits, or one unseparated group) that passes the Luhn check is
redacted; invalid numbers are kept. Phones: a number of digit groups separated by single
spaces/dots/dashes/parentheses, optionally starting with '+' or '(', with 9-15 digits in all; not
glued to letters, not after '#', '$' or another number, not followed by ':' (a time), not a date
or an IPv4 address. Short numbers (order "#482913", dates, amounts) are left alone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from engine.config import PiiSpec
from engine.records import Conversation

STAGE = "pii"
TOKENS = {"email": "<EMAIL>", "phone": "<PHONE>", "card": "<CARD>"}

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])")

_CARD_RUN = re.compile(r"(?<![\w./+#$€£-])(?<!\d,)\d+(?:[ -]\d+)*(?![\w/])(?![.,]\d)")
_CARD_SEP = re.compile(r"[ -]")

_PHONE_SEP = r"(?:[ .-]|\)[ .-]?|[ .-]?\()"
_PHONE = re.compile(
    r"(?<![\w#@/+.,$€£-])(?<!\d[ .()-])"  # not inside a word or number, not after '#' or '$'
    r"(?:\+|\()?\d+"
    rf"(?:{_PHONE_SEP}\d+)*"
    r"(?![\w:])(?![ .-]?\d)"                 # not glued to a word, not a time (14:30)
)
_DATE = re.compile(
    r"(?<!\d)(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./](?:\d{4}|\d{2}))(?!\d)"
)
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


@dataclass
class PiiStats:
    """Totals per type, and per record id (only records with at least one redaction)."""

    totals: Counter = field(default_factory=Counter)
    per_record: dict[str, dict[str, int]] = field(default_factory=dict)
    records_redacted: int = 0


def _redact_emails(text: str, counts: Counter) -> str:
    def sub(m: re.Match[str]) -> str:
        counts["email"] += 1
        return TOKENS["email"]

    return _EMAIL.sub(sub, text)


def _card_spans(groups: list[str]) -> list[tuple[int, int]]:
    """Left to right, the longest Luhn-valid span [i, j] of groups with 13-19 digits."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(groups)
    while i < n:
        ends: list[int] = []  # candidate span ends for start i, shortest first
        digits = 0
        for j in range(i, n):
            digits += len(groups[j])
            if digits > 19 or (j > i and not 3 <= len(groups[j]) <= 6):
                break
            if 13 <= digits and (j == i or 3 <= len(groups[i]) <= 6):
                ends.append(j)
        best = next((j for j in reversed(ends) if luhn_ok("".join(groups[i:j + 1]))), None)
        if best is None:
            i += 1
        else:
            spans.append((i, best))
            i = best + 1
    return spans


def _redact_cards(text: str, counts: Counter) -> str:
    def sub(m: re.Match[str]) -> str:
        run = m.group(0)
        # positions of groups within the run
        pieces = [(g.start(), g.end()) for g in re.finditer(r"\d+", run)]
        groups = [run[a:b] for a, b in pieces]
        if sum(len(g) for g in groups) < 13:
            return run
        spans = _card_spans(groups)
        if not spans:
            return run
        out, last = [], 0
        for i, j in spans:
            out.append(run[last:pieces[i][0]])
            out.append(TOKENS["card"])
            last = pieces[j][1]
            counts["card"] += 1
        out.append(run[last:])
        return "".join(out)

    return _CARD_RUN.sub(sub, text)


def is_phone(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if not 9 <= digits <= 15:
        return False
    if _DATE.search(candidate) or _IPV4.match(candidate):
        return False
    return True


def _redact_phones(text: str, counts: Counter) -> str:
    def sub(m: re.Match[str]) -> str:
        if not is_phone(m.group(0)):
            return m.group(0)
        counts["phone"] += 1
        return TOKENS["phone"]

    return _PHONE.sub(sub, text)


def redact_text(text: str, spec: PiiSpec) -> tuple[str, Counter]:
    """(redacted text, Counter of redactions per type: email, card, phone)."""
    counts: Counter = Counter()
    if spec.emails and "@" in text:
        text = _redact_emails(text, counts)
    if spec.cards:
        text = _redact_cards(text, counts)
    if spec.phones:
        text = _redact_phones(text, counts)
    return text, counts


def redact_conversation(conv: Conversation, spec: PiiSpec) -> tuple[Conversation, Counter]:
    counts: Counter = Counter()
    messages = []
    for msg in conv.messages:
        content, c = redact_text(msg["content"], spec)
        counts.update(c)
        messages.append({**msg, "content": content})
    return replace(conv, messages=messages), counts


def redact(records: Iterable[Conversation], spec: PiiSpec,
           stats: PiiStats | None = None) -> Iterator[Conversation]:
    for conv in records:
        out, counts = redact_conversation(conv, spec)
        if stats is not None and counts:
            stats.totals.update(counts)
            stats.per_record[conv.id] = {k: counts[k] for k in sorted(counts)}
            stats.records_redacted += 1
        yield out
