"""Phone numbers of the PII stage, found and checked by Google's libphonenumber (`phonenumbers`).

A cheap regex finds the digit clusters that could be a phone number (8+ digits with the usual
separators, an optional leading '+' or '(' and an optional extension: "x2231", "ext. 12",
"extension 4", "#55"); each cluster, and only the cluster, goes to `phonenumbers.PhoneNumberMatcher`
for the configured regions (`pii.phone_regions`, in order). Running the matcher over whole texts
costs ~0.1 ms per text per region, ten times what the whole stage may spend; on clusters it is
a few microseconds per text.

Leniency, per cluster:
  written like a phone  ('+', '(', separators between digit groups, or an extension):
                        libphonenumber's Leniency.POSSIBLE, and a full national number for the
                        region (IS_POSSIBLE, not IS_POSSIBLE_LOCAL_ONLY). Customers and export
                        tools write numbers that are not assigned (area codes that do not exist,
                        555 numbers), and they are still someone's number to redact.
  a bare digit run      (8-15 digits, nothing else): Leniency.VALID in some region, because bare
                        runs are mostly order, account and tracking numbers.
The match must cover every digit of the cluster (a number inside a longer number is part of an ID
or a card, never a phone), and the number keeps its extension. Not phones: after an identifier
label ("order", "tracking", "invoice", … see pii_detect._ID_CONTEXT), after '#', a currency sign or
another number, dates, IPv4 addresses, times (followed by ':'), dotted numbers after a version
label.

Canonical value: E.164, plus ";ext=N" — "+1 212-555-0147 x12" and "(212) 555-0147 ext. 12" are one
number, whatever the region it was parsed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher, ValidationResult

_EXTENSION = r"(?:[ \t]*,?[ \t]*(?:[xX]|[eE]xt\.?|EXT\.?|[eE]xtn\.?|[eE]xtension|#)[ \t]*\d{1,7})"
_CLUSTER = re.compile(
    r"(?:(?<=tel:)|(?<![\w#@/.,:$€£¥+<>-]))(?<!\w-)"  # not inside a word, number, e-mail, path, price
    r"(?:\+[ \t]?|\(\+?)?\d"
    r"(?:[\d \t.()/-]*\d)?"
    rf"{_EXTENSION}?"
    r"(?![\w:])(?![.,]\d)"                   # not glued to a word, not a time (14:30)
)
_DIGIT = re.compile(r"\d")
_FORMATTED = re.compile(r"[+()]|\d[ \t.-]+\d")
# how phones are grouped: no group over 5 digits but the last (DE/GB subscriber numbers), and
# not the 2-5-5 / 3-7-7 shapes of order and account references ("93-41373-25800")
_PHONE_GROUPS = re.compile(r"^\D*(?:\d{1,5}\D+)+\d{2,8}\D*$")
_DOTTED = re.compile(r"^[\d.]+$")  # only dots: "15.5.26.4947" is a version, "555.123.4567" a phone
_DOTTED_PHONE = re.compile(r"^(?:\d{3}\.\d{3}\.\d{4}|\d{2}(?:\.\d{2}){4}|0\d{2,4}\.\d{3,4}\.?\d{3,4})$")
_REFERENCE = re.compile(r"^\d{2,3}-\d{5,7}-\d{5,7}$")
_DATE = re.compile(
    r"(?<!\d)(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./](?:\d{4}|\d{2}))(?!\d)"
)
_IPV4_SHAPE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_EXT_START = re.compile(rf"{_EXTENSION}$")
DEFAULT_REGIONS = ("US", "GB", "DE", "FR", "IN", "BR")


@lru_cache(maxsize=4096)
def parse_cluster(cluster: str, regions: tuple[str, ...]) -> tuple[int, int, str] | None:
    """(start, end, canonical) of the phone number `cluster` is, or None. Cached: the same
    number typed the same way recurs through a corpus."""
    ext = _EXT_START.search(cluster)
    core = cluster[:ext.start()] if ext else cluster  # without the extension
    digits = [d.start() for d in _DIGIT.finditer(core)]
    international = cluster.lstrip("(").startswith("+")
    if not (8 if international else 9) <= len(digits) <= 17:
        return None
    first, last = digits[0], digits[-1] + 1
    bare = (_FORMATTED.search(cluster) is None or _REFERENCE.match(core) is not None
            or (_DOTTED.match(core) is not None and _DOTTED_PHONE.match(core) is None)
            or (_PHONE_GROUPS.match(core) is None and "+" not in core and "(" not in core))
    leniency = Leniency.VALID if bare else Leniency.POSSIBLE
    fallback: tuple[int, int, str] | None = None
    for region in (regions[:1] if international else regions):
        for m in PhoneNumberMatcher(cluster, region, leniency=leniency):
            if m.start > first or m.end < last:
                continue  # part of a longer number
            number = m.number
            if phonenumbers.is_possible_number_with_reason(number) != ValidationResult.IS_POSSIBLE:
                continue
            canonical = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            if number.extension:
                canonical += f";ext={number.extension}"
            found = (m.start, m.end, canonical)
            if bare or phonenumbers.is_valid_number(number):
                return found
            fallback = fallback or found
    return fallback


def is_phone(candidate: str, regions: Sequence[str] = DEFAULT_REGIONS) -> bool:
    """True when the whole of `candidate` is one phone number (not a date or an IPv4 address)."""
    candidate = candidate.strip()
    if _DATE.fullmatch(candidate) or _IPV4_SHAPE.match(candidate):
        return False
    return parse_cluster(candidate, tuple(regions)) is not None


def phones(text: str, regions: tuple[str, ...], skip: Callable[[int, str], bool],
           out: list[tuple[int, int, str, str]]) -> None:
    """Append (start, end, "phone", canonical) for every phone number in `text`; `skip(start,
    cluster)` vetoes a cluster by its context (identifier and version labels)."""
    for m in _CLUSTER.finditer(text):
        cluster = m.group(0)
        if len(cluster) < 8 or _DATE.fullmatch(cluster) or _IPV4_SHAPE.match(cluster):
            continue
        if skip(m.start(), cluster):
            continue
        found = parse_cluster(cluster, regions)
        if found is not None:
            start, end, canonical = found
            if cluster[start] == "(" and ")" not in cluster[start:end]:
                start += 1  # "(+1 415 555 0100)": the bracket belongs to the sentence
            out.append((m.start() + start, m.start() + end, "phone", canonical))

