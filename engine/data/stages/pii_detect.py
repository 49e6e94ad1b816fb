"""Pattern detectors of the PII stage: e-mails, cards (Luhn), phones, IBANs (ISO 13616 mod-97), IPs
and street addresses, with their validators and false-positive guards.

`_scan(text, spec)` returns the raw (start, end, type, canonical value) candidates of one text for
the enabled types; engine/data/stages/pii.py resolves overlaps and adds the person names
(engine/data/stages/pii_names.py). The rules are documented there.
"""

from __future__ import annotations

import ipaddress
import re

from engine.config import PiiSpec
from engine.data.stages.pii_address import addresses, addresses_without_number
from engine.data.stages.pii_phones import phones

# ------------------------------------------------------------------------------------- emails
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])")

# ------------------------------------------------------------------------ cards and phones
# Patterns start with a digit (then look behind it) so that the regex engine can skip ahead to the
# next digit instead of trying every position: a large share of the stage's time.
_NUM_RUN = re.compile(r"[0-9][0-9 .()/-]{6,}[0-9]")  # pre-check: phones and cards need 8+ digits
_CARD_RUN = re.compile(r"\d(?<![\w./+#$€£-]\d)(?<!\d,\d)\d*(?:[ -]\d+)*(?![\w/])(?![.,]\d)")
_DIGITS = re.compile(r"\d+")
# an identifier label right before a number: "order 4471 9920 3318", "Tracking no.: 9400 …"
_ID_CONTEXT = re.compile(
    r"(?i:\b(?:order|tracking|serial|s/n|sn|invoice|ticket|case|ref|reference|model|part|sku|"
    r"imei|rma|batch|lot|shipment|parcel|package|isbn|issn|policy|claim|booking|confirmation|"
    r"transaction|txn|receipt|voucher|coupon|meid|esn|iccid|sim|parcels?|orders|refs?)"
    r"(?:[ \t]*(?:number|num|no|nr|id|code|numbers|nos))?(?:[ \t]+(?:is|was|are|reads))?)"
    r"(?i:(?:(?<=ref)|(?<=inv|txn|nos|num|ord)|(?<=no|nr|sn))\.)?[ \t]*[:#]?[ \t]*[:#]?[ \t]*$"
)

# ------------------------------------------------------------------------------------ IBANs
# ISO 13616 registry: country → IBAN length
_IBAN_LENGTHS = {item[:2]: int(item[2:]) for item in (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 "
    "DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28 "
    "IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 "
    "MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 QA29 RO24 RS22 RU33 SA24 SC31 "
    "SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30"
).split()}
_IBAN_START = re.compile(r"\d(?<=(?<![A-Za-z0-9])[A-Za-z]{2}\d)\d(?= ?[A-Za-z0-9])")  # CC + 2 digits

# -------------------------------------------------------------------------------------- IPs
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w])(?!\.\d)")
_IPV4_HINT = re.compile(r"\.\d{1,3}\.\d{1,3}\.")  # literal prefix: a fast pre-check
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?![\w:])")
_VERSION_CONTEXT = re.compile(
    r"(?i:\b(?:firmware|software|version|ver|fw|build|release|update[ds]?|upgraded?|patch|app)"
    r"(?:[ \t]+(?:is|was|to|from|version|v))?[ \t]*[:#]?[ \t]*v?|\bv)$"
)
_WELL_KNOWN_IPS = frozenset({
    "0.0.0.0", "255.255.255.255", "192.168.0.1", "192.168.1.1", "192.168.2.1", "192.168.0.254",
    "192.168.1.254", "192.168.100.1", "10.0.0.1", "10.0.0.138", "10.1.1.1", "172.16.0.1",
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "208.67.222.222", "208.67.220.220",
    "::", "::1",
})

_HAS_DIGIT = re.compile(r"\d")
_SPACES = re.compile(r"\s+")


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


def card_ok(digits: str) -> bool:
    """Luhn, and a length its issuer uses: of 15 digits only American Express (34, 37), UATP (1)
    and old JCB (2131, 1800) issue cards; other 15-digit Luhn numbers are IMEIs."""
    if len(digits) == 15 and not (digits[:2] in ("34", "37") or digits[0] == "1"
                                  or digits[:4] in ("2131", "1800")):
        return False
    return luhn_ok(digits)


def iban_ok(iban: str) -> bool:
    """ISO 13616: known country, its registered length, mod-97 of the rearranged number is 1."""
    iban = iban.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _after_label(text: str, start: int, label: re.Pattern[str]) -> bool:
    return label.search(text, max(0, start - 40), start) is not None


# ------------------------------------------------------------------------ per-type scanners
def _emails(text: str, out: list[tuple[int, int, str, str]]) -> None:
    for m in _EMAIL.finditer(text):
        out.append((m.start(), m.end(), "email", m.group(0).lower()))


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
        best = next((j for j in reversed(ends) if card_ok("".join(groups[i:j + 1]))), None)
        if best is None:
            i += 1
        else:
            spans.append((i, best))
            i = best + 1
    return spans


def _cards(text: str, out: list[tuple[int, int, str, str]]) -> None:
    for m in _CARD_RUN.finditer(text):
        run = m.group(0)
        if len(run) < 13:
            continue
        pieces = [(g.start(), g.end()) for g in _DIGITS.finditer(run)]
        groups = [run[a:b] for a, b in pieces]
        if sum(len(g) for g in groups) < 13:
            continue
        base = m.start()
        for i, j in _card_spans(groups):
            start = base + pieces[i][0]
            if i and len(groups[i - 1]) <= 4:
                continue  # inside a longer grouped number (a 22-digit tracking number)
            if _after_label(text, start, _ID_CONTEXT):
                continue
            out.append((start, base + pieces[j][1], "card", "".join(groups[i:j + 1])))


def _phones(text: str, regions: tuple[str, ...], out: list[tuple[int, int, str, str]]) -> None:
    def skip(start: int, cluster: str) -> bool:
        return (_after_label(text, start, _ID_CONTEXT)
                or ("." in cluster and _after_label(text, start, _VERSION_CONTEXT)))

    phones(text, regions, skip, out)


def _ibans(text: str, out: list[tuple[int, int, str, str]]) -> None:
    for m in _IBAN_START.finditer(text):
        head = text[m.start() - 2:m.end()].upper()
        need = _IBAN_LENGTHS.get(head[:2])
        if need is None:
            continue
        chars, pos, n = [head], m.end(), len(text)
        got = 4
        while got < need and pos < n:
            ch = text[pos]
            if ch == " " and pos + 1 < n:  # single spaces between groups
                pos += 1
                ch = text[pos]
            if not (ch.isascii() and ch.isalnum()):
                break
            chars.append(ch.upper())
            got += 1
            pos += 1
        if got != need or (pos < n and text[pos].isalnum()):
            continue
        iban = "".join(chars)
        if iban_ok(iban):
            out.append((m.start() - 2, pos, "iban", iban))


def _version_like(ip: str) -> bool:
    """2.4.1.0: every part below 16 and not a 10.x private address — a version, not a host."""
    parts = ip.split(".")
    return parts[0] != "10" and all(len(p) == 1 or p in ("10", "11", "12", "13", "14", "15")
                                    for p in parts)


def _ips(text: str, out: list[tuple[int, int, str, str]]) -> None:
    if _IPV4_HINT.search(text):
        for m in _IPV4.finditer(text):
            ip = m.group(0)
            if ip in _WELL_KNOWN_IPS or ip.startswith("127.") or ip.startswith("255."):
                continue
            if _after_label(text, m.start(), _VERSION_CONTEXT) or _version_like(ip):
                continue
            out.append((m.start(), m.end(), "ip", ip))
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            try:
                ip = ipaddress.IPv6Address(m.group(0))
            except ValueError:
                continue
            if ip.is_loopback or ip.is_unspecified:
                continue
            out.append((m.start(), m.end(), "ip", ip.compressed))


# ------------------------------------------------------------------------ all pattern types
def _scan(text: str, spec: PiiSpec) -> list[tuple[int, int, str, str]]:
    out: list[tuple[int, int, str, str]] = []
    if spec.emails and "@" in text:
        _emails(text, out)
    if not _HAS_DIGIT.search(text):  # every other type but person needs a digit
        if spec.addresses:
            addresses_without_number(text, out)
        return out
    if spec.ibans:
        _ibans(text, out)
    long_number = _NUM_RUN.search(text) is not None
    if spec.cards and long_number:
        _cards(text, out)
    if spec.ips:
        _ips(text, out)
    if spec.phones and long_number:
        _phones(text, tuple(spec.phone_regions), out)
    if spec.addresses:
        addresses(text, out)
    return out
