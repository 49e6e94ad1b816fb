"""PII stage: detection of personal data (pure, per record) and consistent surrogate placeholders.

Two halves, so that detection can run in worker processes and numbering stays deterministic:

  detect(conv, spec) -> [Finding]        pure; Findings are small frozen (picklable) dataclasses
  Surrogates().apply(conv, findings)     main process, in input order: each finding becomes
                                         <EMAIL_1>, <PHONE_2>, <PERSON_3>, … numbered per type in
                                         order of first appearance over the whole refine; the same
                                         canonical value always gets the same placeholder

Types (TYPES) and their canonical values:
  email    lower-cased address
  phone    digits only, "(0)" trunk and a leading "00" international prefix dropped
           (+49 30 1234567 and 0049 30 1234567 are one number)
  card     digits only; 13-19 digits passing the Luhn check
  iban     compact upper-case; country length (ISO 13616 registry) + mod-97 check (any case)
  ip       the compressed address; IPv4 (octets <= 255) and IPv6 (full and compressed)
  address  the street part (house number + street, no unit/postcode/city), whitespace collapsed
           and case-folded: "12 rue de la Paix, 75002 Paris" and "12 rue de la Paix" are one address
  person   the full name (a first or last name alone maps to the full name it belongs to)

Overlapping candidates are resolved per turn: the longest span wins (an address keeps its ZIP+4,
an IBAN its digits), then the higher-ranked type (email, iban, card, ip, phone, address, person),
then the earlier one.

False-positive protections (precision first): phones need 9-15 digits, are never glued to letters,
never follow '#', '$', '€', '£' or another number, never precede ':' (times), and are never dates,
IPv4 addresses or dotted numbers after a version label. Phones and cards right after an identifier
label ("order", "tracking", "serial", "invoice", "ticket", "case", "ref", "model", "sku", "imei",
"rma", optionally with "number"/"no."/"#"/":") are kept. IPs right after "firmware", "version",
"build", "release", "update" or "v", and those with every part below 16 (2.4.1.0), are version
strings and kept, and so are well-known non-personal addresses (loopback, unspecified, broadcast,
netmasks, common router gateways such as 192.168.1.1, public DNS resolvers). Addresses need a
house number. Names come only from the conversation's hints["names"], signature blocks and
greetings, never from capitalisation alone, so product names ("Brightwave Hub Mini") stay.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from engine.config import PiiSpec
from engine.records import Conversation, SourceRef

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


# ------------------------------------------------------------------------------------- emails
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])")

# ------------------------------------------------------------------------ cards and phones
# Patterns start with a digit (then look behind it) so that the regex engine can skip ahead to the
# next digit instead of trying every position: a large share of the stage's time.
_NUM_RUN = re.compile(r"[0-9][0-9 .()-]{7,}[0-9]")  # pre-check: phones and cards need 9+ digits
_CARD_RUN = re.compile(r"\d(?<![\w./+#$€£-]\d)(?<!\d,\d)\d*(?:[ -]\d+)*(?![\w/])(?![.,]\d)")
_DIGITS = re.compile(r"\d+")
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
_IPV4_SHAPE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
# an identifier label right before a number: "order 4471 9920 3318", "Tracking no.: 9400 …"
_ID_CONTEXT = re.compile(
    r"(?i:\b(?:order|tracking|serial|s/n|sn|invoice|ticket|case|ref|reference|model|part|sku|"
    r"imei|rma|batch|lot|shipment|parcel|package)(?:[ \t]*(?:number|num|no|nr|id|code))?)"
    r"[ \t]*[.:#]?[ \t]*[.:#]?[ \t]*$"
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

# -------------------------------------------------------------------------------- addresses
_UNIT = r"(?:Apt|Apartment|Unit|Suite|Ste|Flat|Floor|Fl|Room|Rm|#)\.?[ \t]*#?[ \t]*[A-Za-z]?\d{1,5}[A-Za-z]?"
_EN_SUFFIX = (r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|"
              r"Place|Pl|Terrace|Close|Crescent|Parkway|Pkwy|Square|Sq|Highway|Hwy|Circle|Trail)")
_CITY = r"[A-Z][A-Za-z.'’-]+(?:[ \t][A-Z][A-Za-z.'’-]+){0,2}"
_TAIL = (
    r"(?:,?[ \t]+(?:"
    rf"{_CITY},?[ \t]+[A-Z]{{2}}[ \t]+\d{{5}}(?:-\d{{4}})?"               # Springfield, IL 62704
    rf"|(?:{_CITY},?[ \t]+)?[A-Z]{{1,2}}\d[A-Z\d]?[ \t]*\d[A-Z]{{2}}\b"   # London WC1N 3AX
    r"|\d{4,5}[ \t]+[A-ZÀ-Þ][\w'’-]+"                                   # 10115 Berlin
    r"))?"
)
_ADDRESS_EN = (
    rf"(?:(?<![\w#$€£./-]){_UNIT},?[ \t]+)?"
    r"(?P<street>(?<![\w#$€£./,-])\d{1,5}[A-Za-z]?(?:[-–/]\d{1,5}[A-Za-z]?)?,?[ \t]+"
    r"(?:(?:[NSEW]|North|South|East|West)\.?[ \t]+)?"
    r"(?:(?:\d{1,3}(?:st|nd|rd|th)|[A-Z][A-Za-z'’-]*)[ \t]+){1,4}?"
    rf"{_EN_SUFFIX}\b(?:[ \t]+(?:NW|NE|SW|SE|N|S|E|W)\b)?)"
    rf"(?:\.?,?[ \t]*{_UNIT}\b)?{_TAIL}"
)
_DE_WORD = r"[A-ZÄÖÜ][a-zäöüß]+"
_ADDRESS_DE = (
    rf"(?P<street>(?<![\w-])(?:{_DE_WORD}[- ]){{0,3}}"
    rf"(?:[A-ZÄÖÜ][a-zäöüß]*(?:straße|strasse|str\.|weg|platz|allee|gasse)"
    r"|(?:Straße|Strasse|Str\.|Weg|Platz|Allee|Gasse))"
    r"[ \t]*\d{1,4}[a-z]?(?:[-/]\d{1,4}[a-z]?)?(?!\w))"
    r"(?:,?[ \t]+(?:[A-Z]-)?\d{4,5}[ \t]+[A-ZÄÖÜ][\wäöüß-]+)?"
)
_FR_NAME = r"(?:(?:d[eu]s?|la|le|les|et|sur|sous)[ \t]+|[dl]['’])*[A-ZÀ-Þ][\w'’-]*"
_ADDRESS_FR = (
    r"(?P<street>(?<![\w#$€£./,-])\d{1,4}(?:[ \t]?(?:bis|ter))?,?[ \t]+"
    r"(?i:rue|avenue|av\.|boulevard|bd|place|allée|allee|chemin|impasse|quai|route|cours|passage)"
    rf"[ \t]+{_FR_NAME}(?:[ \t]+{_FR_NAME}){{0,4}})"
    r"(?:,?[ \t]+\d{5}[ \t]+[A-ZÀ-Þ][\w'’-]+)?"
)
# each address form runs only where its cheap hint (a street word) occurs
_ADDRESS_FORMS = (
    (re.compile(rf"{_EN_SUFFIX}\b"), re.compile(_ADDRESS_EN)),
    (re.compile(r"[0-9](?<=(?:sse|aße|tr\.|weg|Weg|atz|lee)[ \t][0-9])"
                r"|[0-9](?<=(?:sse|aße|tr\.|weg|atz|lee)[0-9])"), re.compile(_ADDRESS_DE)),
    (re.compile(r"\d(?:[ \t]?(?:bis|ter))?,?[ \t]+(?i:rue|av|avenue|bd|boulevard|place|all[ée]e|"
                r"chemin|impasse|quai|route|cours|passage)\b"), re.compile(_ADDRESS_FR)),
)
_HAS_DIGIT = re.compile(r"\d")
_NOT_A_STREET = re.compile(r"(?i:\b(?:google|one|hard|flash|usb|thumb|disk|external|network|ssd|"
                           r"solid state))\s+Drive$")  # "12 Orchard Drive" is a street

# ---------------------------------------------------------------------------------- persons
# Anna, O'Neil, D'Angelo, McDonald, Anne-Marie, Zoë — not "I'm", not ALL-CAPS words
_NAME_PART = r"[A-ZÀ-ÖØ-Þ](?:['’][A-ZÀ-ÖØ-Þ])?[a-zß-öø-ÿ]+(?:[A-Z][a-zß-öø-ÿ]+)?"
_NAME = rf"{_NAME_PART}(?:-{_NAME_PART})?"
_HINT_NAME = re.compile(rf"(?:(?:{_NAME}|[A-Z]\.)(?: |$))+")
_FOLLOWING_NAME = re.compile(rf"[ \t]+({_NAME})(?![\w@.]|-\w)")
_NAME_LINE = rf"(?:[A-Z]\.[ \t]*)?{_NAME}(?:[ \t]+(?:{_NAME}|[A-Z]\.)){{0,2}}"
_TITLES = r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Herr|Frau|Mme|Mlle|M)\.?"
_CLOSING = (r"(?i:best regards|kind regards|warm regards|warmest regards|regards|best wishes|best|"
            r"thanks|thank you|many thanks|thanks again|cheers|sincerely|yours sincerely|"
            r"yours truly|mit freundlichen grüßen|mit freundlichen grüssen|viele grüße|"
            r"liebe grüße|beste grüße|cordialement|bien à vous)")
_SIGNATURE = re.compile(
    rf"(?m)^[ \t]*(?:{_CLOSING}(?:[ \t]*,[ \t]*|[ \t]*[,.!]?[ \t]*\n[ \t]*)|--[ \t]*\n[ \t]*)"
    rf"({_NAME_LINE})[ \t]*$"
)
_GREETING = re.compile(
    r"(?m)^[ \t]*(?i:hi|hello|hey|dear|hallo|liebe|lieber|sehr geehrter?|guten (?:tag|morgen|abend)|"
    r"bonjour|salut|hola|ciao|moin|good (?:morning|afternoon|evening))[ \t,]+"
    rf"(?:{_TITLES}[ \t]+({_NAME_LINE})[ \t]*(?:[,!:.]|$)|({_NAME_LINE})[ \t]*(?:[,!]|$))"
)
_TITLE_WORDS = frozenset({"Mr", "Mrs", "Ms", "Mx", "Miss", "Dr", "Prof", "Herr", "Frau", "Mme",
                          "Mlle", "M", "Sir", "Madam"})
# words that make a greeting or signature line a role/organisation, not a person
_NOT_NAMES = frozenset({
    "Team", "Support", "Service", "Services", "Customer", "Customers", "Care", "Desk", "Help",
    "Helpdesk", "Department", "Dept", "Sales", "Billing", "Inc", "Ltd", "Llc", "Gmbh", "Home",
    "Store", "Shop", "Group", "Agent", "Agents", "Staff", "Crew", "Office", "Admin", "Manager",
    "The", "There", "All", "Everyone", "Sir", "Madam", "Folks", "Guys", "Friend", "Friends",
    "Again", "Hello", "Thanks", "Thank", "Regards", "Technician", "Tech", "Bot", "Assistant",
    "Google", "Alexa", "Siri", "Cortana", "Kundenservice", "Kunde", "Damen", "Herren", "Zusammen",
    "Tous", "Madame", "Monsieur", "Unknown", "Anonymous", "None", "Null", "Guest", "User",
    "Test", "Nobody", "Name",
})
# capitalised words that follow a first name without being its surname ("Thanks Anna, The …")
_NOT_SURNAMES = _NOT_NAMES | frozenset({
    "This", "That", "It", "We", "You", "Your", "My", "Our", "Please", "Can", "Could", "Would",
    "Will", "Is", "Are", "And", "But", "Or", "So", "If", "Yes", "No", "Ok", "Okay", "Here",
})
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


def iban_ok(iban: str) -> bool:
    """ISO 13616: known country, its registered length, mod-97 of the rearranged number is 1."""
    iban = iban.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def is_phone(candidate: str) -> bool:
    digits = sum(map(str.isdigit, candidate))
    if not 9 <= digits <= 15:
        return False
    if _DATE.search(candidate) or _IPV4_SHAPE.match(candidate):
        return False
    return True


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
        best = next((j for j in reversed(ends) if luhn_ok("".join(groups[i:j + 1]))), None)
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
            if _after_label(text, start, _ID_CONTEXT):
                continue
            out.append((start, base + pieces[j][1], "card", "".join(groups[i:j + 1])))


def _phones(text: str, out: list[tuple[int, int, str, str]]) -> None:
    for m in _PHONE.finditer(text):
        cand = m.group(0)
        if (not is_phone(cand) or _after_label(text, m.start(), _ID_CONTEXT)
                or ("." in cand and _after_label(text, m.start(), _VERSION_CONTEXT))):
            continue
        canon = "".join(filter(str.isdigit, cand.replace("(0)", "")))
        if canon.startswith("00"):
            canon = canon[2:]
        out.append((m.start(), m.end(), "phone", canon))


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


def _addresses(text: str, out: list[tuple[int, int, str, str]]) -> None:
    for hint, form in _ADDRESS_FORMS:
        if hint.search(text):
            for m in form.finditer(text):
                span = m.group(0).rstrip(" \t,")
                street = m.group("street").rstrip(" \t,")
                if street.endswith(" Drive") and _NOT_A_STREET.search(street):
                    continue
                out.append((m.start(), m.start() + len(span), "address",
                            _SPACES.sub(" ", street).casefold()))


# ------------------------------------------------------------------------------------ names
def _clean_name(name: str) -> str:
    """'Keller, Anna' → 'Anna Keller'; titles dropped; ALL-CAPS / lower-case → Title Case."""
    name = _SPACES.sub(" ", name).strip(" ,;")
    if name.count(",") == 1:
        last, first = (p.strip() for p in name.split(","))
        name = f"{first} {last}".strip()
    words = [w for w in name.split(" ") if w.rstrip(".") not in _TITLE_WORDS]
    name = " ".join(words)
    if name and (name.isupper() or name.islower()):
        name = name.title()
    return name


def _known_names(conv: Conversation, texts: list[str]) -> list[str]:
    """Names from the hints (customer-name column, e-mail display name), signatures, greetings."""
    found: list[str] = []
    hints = conv.hints.get("names") if conv.hints else None
    if isinstance(hints, str):
        hints = [hints]
    for raw in hints or ():
        if not isinstance(raw, str) or not (name := _clean_name(raw)):
            continue
        if not _HINT_NAME.fullmatch(name):
            name = name.title()  # "anna Keller" from a hand-typed column
        if _HINT_NAME.fullmatch(name):
            found.append(name)
    for text in texts:
        if "\n" in text or "," in text:
            for m in _SIGNATURE.finditer(text):
                found.append(m.group(1))
        for m in _GREETING.finditer(text):
            found.append(m.group(1) or m.group(2))
    out: list[str] = []
    for name in found:
        words = name.split()
        if any(w.rstrip(".") in _NOT_NAMES for w in words):
            continue
        if name not in out:
            out.append(name)
    # a known first name followed by a capitalised word elsewhere ("Anna Keller called") is the
    # full name: learn it, so that the surname alone is redacted too
    for name in [n for n in out if " " not in n]:
        for text in texts:
            for start, end in _occurrences(text, name):
                m = _FOLLOWING_NAME.match(text, end)
                if m and m.group(1) not in _NOT_SURNAMES and (full := f"{name} {m.group(1)}") not in out:
                    out.append(full)
    return out


def known_names(conv: Conversation) -> list[str]:
    """The person names `detect` would learn from this conversation (hints, signatures, greetings).

    The refine calls it before the turns stage strips signature blocks, and passes the names on
    in conv.hints["names"], so a name seen only in a signature is still redacted elsewhere."""
    return _known_names(conv, [m.get("content") or "" for m in conv.messages])


def _occurrences(text: str, word: str) -> Iterator[tuple[int, int]]:
    """Case-sensitive whole-word occurrences of `word` (not inside a word, e-mail or hyphenation)."""
    start = text.find(word)
    n = len(text)
    while start != -1:
        end = start + len(word)
        before = text[start - 1] if start else " "
        after = text[end] if end < n else " "
        if (not (before.isalnum() or before in "_@.+-")
                and not (after.isalnum() or after in "_@")
                and not (after == "-" and end + 1 < n and text[end + 1].isalnum())):
            yield start, end
        start = text.find(word, start + 1)


def _name_table(names: list[str]) -> dict[str, str]:
    """Surface form → canonical full name. Full names first, then their parts (>= 3 letters)."""
    table: dict[str, str] = {}
    full = [n for n in names if " " in n]
    for name in full:
        table.setdefault(name, name)
    for name in full:
        for part in name.split(" "):
            if len(part) >= 3 and part.rstrip(".") not in _TITLE_WORDS and part[-1] != ".":
                table.setdefault(part, name)
    for name in names:
        if " " not in name and len(name) >= 2:
            table.setdefault(name, name)
    return table


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


def _scan(text: str, spec: PiiSpec) -> list[tuple[int, int, str, str]]:
    out: list[tuple[int, int, str, str]] = []
    if spec.emails and "@" in text:
        _emails(text, out)
    if not _HAS_DIGIT.search(text):  # every other type but person needs a digit
        return out
    if spec.ibans:
        _ibans(text, out)
    long_number = _NUM_RUN.search(text) is not None
    if spec.cards and long_number:
        _cards(text, out)
    if spec.ips:
        _ips(text, out)
    if spec.phones and long_number:
        _phones(text, out)
    if spec.addresses:
        _addresses(text, out)
    return out


def detect(conv: Conversation, spec: PiiSpec) -> list[Finding]:
    """Every PII finding in `conv`, sorted by (turn, start), never overlapping. Pure."""
    texts = [m.get("content") or "" for m in conv.messages]
    cands = [_scan(t, spec) for t in texts]
    if spec.names:
        table = _name_table(_known_names(conv, texts))
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
class Surrogates:
    """Consistent placeholders for the whole refine: same (type, canonical value) → same placeholder.

    numbered=False gives the plain tokens (<EMAIL>, <PHONE>, …). `mapping` (placeholder → the
    distinct original strings it replaced, in first-seen order) is kept only when keep_originals
    is true — it is what the encrypted vault stores.
    """

    def __init__(self, numbered: bool = True, keep_originals: bool = True):
        self.numbered = numbered
        self.keep_originals = keep_originals
        self.mapping: dict[str, list[str]] = {}
        self._ids: dict[tuple[str, str], str] = {}
        self._next: Counter[str] = Counter()

    @classmethod
    def for_spec(cls, spec: PiiSpec) -> "Surrogates":
        return cls(numbered=spec.surrogates, keep_originals=spec.vault == "encrypted")

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
