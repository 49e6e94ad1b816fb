"""Street addresses of the PII stage: US/UK forms built on USPS Publication 28 (every Appendix C1
street suffix in every listed spelling, every Appendix C2 secondary unit), military and PO box
addresses, and the German and French street forms.

US/UK: house number ("88", "221B", "12-14", "123 1/2") + optional predirectional + 1-4 street-name
words (capitalised, ALL-CAPS or ordinals such as "5th") + a C1 suffix + optional postdirectional
+ optional C2 unit ("Suite 210", "Apt. 4B", "# 12", "Rear", UK "Flat 3"/"Studio 8", also before the
street) + optional city/state/ZIP (or a UK postcode) on the same or the next line. Also "Flat 12,
Dawson Drive" (a unit instead of a house number), "PO Box 1234", "PSC 1234, Box 5678 APO AE 09012"
and "USNS Smith FPO AP 96543". Street names written in lower case ("88 cole islands") count only
when an address cue precedes ("I live at", "ship to", "address:") or a unit or ZIP follows.

Not an address: a number right after a capitalised word or a model number ("Office 365 Business
Center", "Windows 11 Home"), a suffix with no street-name word before it ("3 way adapter"), drive
names ("2 USB Drive", "Google Drive").

Canonical value: the house number and street, case-folded, whitespace collapsed and the suffix
written as its C1 standard abbreviation ("88 Cole Islands" and "88 COLE ISS" are one address).
"""

from __future__ import annotations

import re

from engine.data.stages.pii_pub28 import C1, UNITS_WITH_RANGE, UNITS_WITHOUT_RANGE

_STANDARD = {form: std for std, forms in C1.items() for form in forms}
_UK_SUFFIXES = ("CLOSE", "RISE", "PARADE", "WHARF", "YARD", "GATE", "VALE", "CHASE", "GRANGE",
                "CROFT", "MEAD", "APPROACH", "BROADWAY", "CIRCUS", "EMBANKMENT", "ESPLANADE",
                "PROMENADE", "QUAY", "WYND", "HILLSIDE", "GREENWAY")
for _s in _UK_SUFFIXES:
    _STANDARD.setdefault(_s, _s)
# suffixes written in Title case: the primary names, the standard abbreviations, and spellings
# of four letters or more ("Centre", "Avenu"); shorter variants ("Bot", "Cen") only in CAPS
_TITLE = frozenset(f.title() for std, forms in C1.items() for f in forms
                   if f == std or f == forms[1] or len(f) >= 4 or f in ("AV", "STR", "CRT"))
_TITLE |= frozenset(s.title() for s in _UK_SUFFIXES)
_UPPER = frozenset(_STANDARD)
_DIRECTIONS = frozenset({"N", "S", "E", "W", "NE", "NW", "SE", "SW", "NORTH", "SOUTH", "EAST",
                         "WEST", "NORTHEAST", "NORTHWEST", "SOUTHEAST", "SOUTHWEST"})
_NOT_A_STREET = frozenset({"google", "one", "hard", "flash", "usb", "thumb", "disk", "external",
                           "network", "ssd", "cloud", "shared", "team", "onedrive", "icloud",
                           "solid", "state", "the", "a", "an"})


def _alternation(words: list[str]) -> str:
    forms: list[str] = []
    for w in sorted(words, key=len, reverse=True):
        forms += [w, w.title(), w.lower()]
    return "|".join(dict.fromkeys(re.escape(f) for f in forms))


_UNIT_WORDS = frozenset(w for pair in UNITS_WITH_RANGE + UNITS_WITHOUT_RANGE for w in pair)
_RANGE_UNITS = _alternation([w for pair in UNITS_WITH_RANGE for w in pair] + ["FLAT", "STUDIO"])
_PLAIN_UNITS = _alternation([w for pair in UNITS_WITHOUT_RANGE for w in pair])
_UNIT_ID = r"(?:[A-Za-z]?\d{1,6}[A-Za-z]?(?:-\d{1,5})?|[A-Z](?![\w]))"
_UNIT = (rf"(?:(?:{_RANGE_UNITS})\.?[ \t]*(?:#|No\.?|no\.?)?[ \t]*{_UNIT_ID}"
         rf"|#[ \t]*{_UNIT_ID}|(?:{_PLAIN_UNITS})\b\.?)")
_AFTER_STREET = re.compile(
    r"(?P<post>\.?[ \t]+(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\b\.?)?"
    rf"(?P<unit>\.?,?[ \t]*(?:{_UNIT})(?![\w]))?"
)
_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|"
    "NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|AS|GU|MP|PR|VI|AA|AE|AP|PW|MH|FM|"
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|"
    "Hawaii|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|"
    "Michigan|Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|"
    "New Mexico|New York|North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|"
    "Rhode Island|South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|"
    "West Virginia|Wisconsin|Wyoming|Puerto Rico|District of Columbia"
)
_CITY = r"[A-Z][A-Za-z.'’-]+(?:[ \t][A-Z][A-Za-z.'’-]+){0,3}"
_CITY_ANY = r"[A-Za-z][A-Za-z.'’-]+(?:[ \t][A-Za-z][A-Za-z.'’-]+){0,3}"
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?[ \t]*\d[A-Z]{2}\b"
_SEP = r"\.?(?:,?[ \t]+|,?[ \t]*\r?\n[ \t]*)"
_TAIL = re.compile(
    rf"{_SEP}(?:"
    rf"{_CITY_ANY},?[ \t]+(?:{_STATES})\.?,?[ \t]+\d{{5}}(?:-\d{{4}})?(?!\d)"  # Springfield, IL 62704
    rf"|(?:{_CITY},?[ \t]*(?:\r?\n[ \t]*)?)?{_UK_POSTCODE}"                  # London WC1N 3AX
    rf"|{_CITY},?[ \t]+(?:{_STATES})\b(?![ \t]+\d)"                         # Springfield, IL
    r")"
)
_CUE = re.compile(
    r"(?i:\b(?:live[sd]?|living|reside[sd]?|located|staying|moved|move|address(?:[ \t]+is)?|"
    r"ship(?:ped|ping)?(?:[ \t]+(?:it|them|this|that))?|deliver(?:ed|y)?(?:[ \t]+(?:it|them))?|"
    r"send(?:[ \t]+(?:it|them|the \w+))?|mail(?:ed)?(?:[ \t]+(?:it|them))?|drop(?:[ \t]+it)?[ \t]+off)"
    r"(?:[ \t]+(?:at|to|is|on|in))?[ \t]*:?[ \t]*$)"
)
_CUE_WORDS = frozenset({"to", "at", "is", "in", "on", "from", "near", "address", "addr", "ship",
                        "deliver", "send", "mail", "location", "live", "home", "billing",
                        "shipping", "street", "residence", "and", "or", "of", "new", "old", "my",
                        "our", "his", "her", "their", "the", "c/o", "attn"})
_QUANTITY_WORDS = frozenset({"bought", "buy", "ordered", "order", "purchased", "have", "has", "had",
                             "got", "get", "need", "needs", "want", "wanted", "returned", "return",
                             "added", "install", "installed", "with", "of", "all", "only", "these",
                             "those", "sold", "sell", "use", "using", "own", "about", "over"})
_NUMBER_START = re.compile(
    r"(?<![\w#$€£¥./,:+-])(\d{1,6}(?:[A-Za-z](?![\w']))?(?:[-–/]\d{1,5}[A-Za-z]?)?"
    r"(?:[ \t]+1/2)?),?[ \t]+(?=[A-Za-z0-9])"
)
_WORD = re.compile(r"[A-Za-z0-9][\w'’.-]*")
_GAP = re.compile(r"[ \t]+")
_ORDINAL = re.compile(r"\d{1,3}(?:st|nd|rd|th|ST|ND|RD|TH)")
_CONNECTORS = frozenset({"of", "the", "de", "del", "la", "las", "los", "van", "von", "du", "le"})
_UNIT_FIRST = re.compile(
    rf"(?<![\w#$€£./-])(?:Flat|Studio|Apartment|Apt\.?|Unit|FLAT|STUDIO|APT\.?|UNIT)[ \t]*#?[ \t]*"
    rf"{_UNIT_ID},?(?:[ \t]+|[ \t]*\r?\n[ \t]*)"
)
_UNIT_BEFORE = re.compile(rf"(?<![\w#$€£./-])(?:{_UNIT}),?[ \t]+$")
_PO_BOX = re.compile(
    r"(?<![\w.])(?i:p\.?[ \t]?o\.?[ \t]?box|post[ \t]+office[ \t]+box)[ \t]*#?[ \t]*\d{1,7}(?!\d)"
)
_MILITARY = re.compile(
    r"(?<![\w])(?:(?:PSC|CMR|Unit)[ \t]+\d{4},?[ \t]+Box[ \t]+\d{4}"
    r"|(?:USNS|USNV|USS|USCGC)[ \t]+[A-Z][A-Za-z'’-]+)"
    r"(?:,?[ \t]*(?:\r?\n[ \t]*)?(?:APO|FPO|DPO)[ \t]+(?:AA|AE|AP)[ \t]+\d{5}(?:-\d{4})?)?"
    r"|(?<![\w])(?:APO|FPO|DPO)[ \t]+(?:AA|AE|AP)[ \t]+\d{5}(?:-\d{4})?"
)
_SPACES = re.compile(r"\s+")

# ---------------------------------------------------------------------- German and French
_DE_WORD = r"[A-ZÄÖÜÀ-Þ][a-zäöüßà-ÿ]+"
# particles and initials inside a street name: "Hans-J.-Hahn-Ring", "Sandra-van der Dussen-Straße"
_DE_PARTICLE = r"(?:van|von|der|den|de|zu|vom|zum|zur|am|im|an|auf|dem)"
# the small words inside a town name: "Büsingen am Hochrhein", "Frankfurt am Main"
_DE_CITY_LINK = r"(?:am|an der|im|in|ob der|bei|vor der|a\.|a\.d\.)"
_DE_SUFFIX = r"straße|strasse|str\.|weg|platz|allee|gasse|ring|damm|ufer|chaussee|pfad|steig|markt"
_DE_SUFFIX_ALONE = "|".join(w.capitalize() for w in _DE_SUFFIX.split("|"))  # "Am Markt 3"
_ADDRESS_DE = re.compile(
    rf"(?P<street>(?<![\w-])(?:(?:{_DE_WORD}|[A-Z]\.|{_DE_PARTICLE})[- ]){{0,4}}"
    rf"(?:[A-ZÄÖÜÀ-Þ][a-zäöüßà-ÿ]*(?:{_DE_SUFFIX})"
    rf"|(?:{_DE_SUFFIX_ALONE}))"
    r"[ \t]*\d{1,4}[a-z]?(?:[-/]\d{1,4}[a-z]?)?(?!\w))"
    r"(?:,?(?:[ \t]+|[ \t]*\r?\n[ \t]*)(?:[A-Z]-)?\d{4,5}[ \t]+[A-ZÄÖÜ][\wäöüß-]+"
    rf"(?:[ \t]+(?:{_DE_CITY_LINK}[ \t]+)?[A-ZÄÖÜ][\wäöüß-]+){{0,2}})?"
)
_ENGLISH_RING = re.compile(r"(?:Sp|St|Br|Sc|Wi|Ea|Ke)ring[ \t]+\d"
                           r"|\w+ring[ \t]+(?:19|20)\d\d(?!\d)")
_DE_HINT = re.compile(rf"(?i:{_DE_SUFFIX})[ \t]*\d")
_FR_NAME = r"(?:(?:d[eu]s?|la|le|les|et|sur|sous|aux?)[ \t]+|[dl]['’])*[A-ZÀ-Þ][\w'’-]*"
_FR_STREET = (r"(?i:rue|avenue|av\.|boulevard|bd|place|allée|allee|chemin|impasse|quai|route|"
              r"cours|passage|square|rond-point|voie|sentier|esplanade)")
_FR_STREET_NAME = rf"{_FR_STREET}[ \t]+{_FR_NAME}(?:[ \t]+{_FR_NAME}){{{{0,{{}}}}}}"  # {} = more words
_FR_POSTCODE_CITY = r"\d{5}[ \t]+[A-ZÀ-Þ][\w'’-]+(?:[ \t][A-ZÀ-Þ][\w'’-]+){0,2}"
_SAME_OR_NEXT_LINE = r"(?:[ \t]+|[ \t]*\r?\n[ \t]*)"
_ADDRESS_FR = re.compile(
    r"(?P<street>(?<![\w#$€£./,-])\d{1,4}(?:[ \t]?(?:bis|ter))?,?[ \t]+"
    rf"{_FR_STREET_NAME.format(4)})"
    rf"(?:,?{_SAME_OR_NEXT_LINE}{_FR_POSTCODE_CITY})?"
)
# no house number: "Deliver to: rue Bourdon", "I moved to boulevard Margot Clerc"
_ADDRESS_FR_CUED = re.compile(
    r"(?i:\b(?:to|is|at|address|adresse|à)[ \t]*:?[ \t]+)"
    rf"(?P<street>{_FR_STREET_NAME.format(3)})"
    rf"(?:,?{_SAME_OR_NEXT_LINE}{_FR_POSTCODE_CITY})?"
)
_ADDRESS_FR_LINE = re.compile(  # "avenue Robin\n02453 Sainte ValérieBourg": street, postcode line
    rf"(?<![\w'’-])(?P<street>{_FR_STREET_NAME.format(3)})"
    rf"[ \t]*,?[ \t]*\r?\n[ \t]*{_FR_POSTCODE_CITY}"
)
# a French street word in lower case before a capitalised name needs no cue in other languages'
# text: "the invoice still shows boulevard Caroline Collet"
_ADDRESS_FR_BARE = re.compile(
    r"(?<![\w'’-])(?P<street>(?:rue|avenue|boulevard|allée|impasse|chemin|quai|esplanade)[ \t]+"
    rf"{_FR_NAME}(?:[ \t]+{_FR_NAME}){{0,3}})"
    rf"(?:,?{_SAME_OR_NEXT_LINE}{_FR_POSTCODE_CITY})?"
)
_FR_HINT = re.compile(rf"\d(?:[ \t]?(?:bis|ter))?,?[ \t]+{_FR_STREET}\b")


def _canonical(street: str) -> str:
    words = _SPACES.sub(" ", street).strip(" ,.").split(" ")
    return " ".join(_STANDARD.get(w.rstrip(".").upper(), w).casefold() if i else w.casefold()
                    for i, w in enumerate(words))


def _street_end(text: str, pos: int, lower: bool) -> int | None:
    """From the first word after a house number: the end of a street name + C1 suffix, or None.
    lower=False: capitalised or ALL-CAPS names and suffix; lower=True: all in lower case."""
    words: list[str] = []
    starts: list[int] = []
    p = pos
    for _ in range(7):
        m = _WORD.match(text, p)
        if m is None:
            break
        words.append(m.group(0))
        starts.append(m.start())
        gap = _GAP.match(text, m.end())
        if gap is None:
            break
        p = gap.end()
    first = 1 if len(words) > 1 and words[0].rstrip(".").upper() in _DIRECTIONS else 0
    named = 0
    for i in range(first, len(words)):
        bare = words[i].rstrip(".,")
        if named:
            upper = bare.upper()
            if (bare in _TITLE or (bare.isupper() and upper in _UPPER)) if not lower else (
                    bare.islower() and upper in _UPPER and len(bare) > 2):
                if named == 1 and words[i - 1].lower() in _NOT_A_STREET:
                    return None
                end = starts[i] + len(bare)
                for k in range(i + 1, min(i + 3, len(words))):  # "Fox Run Anex", "Old Mill Sqs"
                    nxt = words[k].rstrip(".,")
                    if (not (nxt in _TITLE or (nxt.isupper() and nxt in _UPPER)) or lower
                            or nxt.upper() in _UNIT_WORDS):
                        break
                    if words[k - 1].endswith(","):
                        break
                    end = starts[k] + len(nxt)
                return end
        if words[i].endswith(".") and len(bare) > 1 and bare not in ("St", "Mt", "Ft"):
            return None  # "120 Hz. The …": a sentence ends inside
        if _ORDINAL.fullmatch(bare) or (bare.isalpha() and (bare.islower() if lower
                                                             else bare[:1].isupper())):
            named += 1
        elif named and bare in _CONNECTORS:
            continue
        else:
            return None
        if named > 4:
            return None
    return None


def _previous_word(text: str, start: int) -> str:
    """The word right before `start` on the same line ('' after punctuation or a line start)."""
    m = re.search(r"([\w/.-]+)[ \t]+$", text[max(0, start - 30):start])
    if m is None or m.group(1).endswith((".", ":")):
        return ""  # a sentence or a label ends there
    return m.group(1)


def _us_uk(text: str, out: list[tuple[int, int, str, str]]) -> None:
    for m in _NUMBER_START.finditer(text):
        start = m.start()
        end = _street_end(text, m.end(), False)
        lower = end is None
        if lower:
            end = _street_end(text, m.end(), True)
            if end is None:
                continue
        street = text[start:end]
        after = _AFTER_STREET.match(text, end)
        unit_end = after.end() if after and after.group(0) else end
        tail = _TAIL.match(text, unit_end)
        has_unit_or_tail = unit_end > end or tail is not None
        if lower and not has_unit_or_tail and _CUE.search(text, max(0, start - 60), start) is None:
            continue
        prev = _previous_word(text, start)
        if prev.lower() in _QUANTITY_WORDS and not has_unit_or_tail:
            continue  # "I bought 3 Mesh Points": a quantity, not a house number
        if (prev and not has_unit_or_tail and prev.lower() not in _CUE_WORDS
                and (prev[:1].isupper() or any(ch.isdigit() for ch in prev))):
            continue  # "Office 365 Business Center", "model X 12 Park Ave" is a product
        lead = _UNIT_BEFORE.search(text, max(0, start - 24), start)
        if lead is not None:
            start = lead.start()
        stop = tail.end() if tail else unit_end
        while stop > end and text[stop - 1] in " \t,.":
            stop -= 1
        out.append((start, stop, "address", _canonical(street)))


def _unit_first(text: str, out: list[tuple[int, int, str, str]]) -> None:
    """'Flat 12, Dawson Drive' / 'Studio 87\\nDawson Drive': a unit instead of a house number."""
    for m in _UNIT_FIRST.finditer(text):
        end = _street_end(text, m.end(), False)
        if end is None:
            continue
        tail = _TAIL.match(text, end)
        stop = tail.end() if tail else end
        out.append((m.start(), stop, "address", _canonical(text[m.start():end])))


def addresses_without_number(text: str, out: list[tuple[int, int, str, str]]) -> None:
    """French streets written without a house number: after a cue ("Deliver to: rue Bourdon"),
    with a lower-case street word ("shows boulevard Margot Clerc"), above a postcode line."""
    if "rue" in text or "ue " in text or "min " in text or "vard " in text:
        for rx in (_ADDRESS_FR_CUED, _ADDRESS_FR_BARE):
            for m in rx.finditer(text):
                out.append((m.start("street"), m.end(), "address", _canonical(m.group("street"))))
        if "\n" in text:
            for m in _ADDRESS_FR_LINE.finditer(text):
                out.append((m.start("street"), m.end(), "address", _canonical(m.group("street"))))


def addresses(text: str, out: list[tuple[int, int, str, str]]) -> None:
    """Append (start, end, "address", canonical) for every street address in `text`."""
    _us_uk(text, out)
    addresses_without_number(text, out)
    if any(h in text for h in ("lat", "tudio", "pt", "nit", "LAT", "TUDIO", "PT", "NIT")):
        _unit_first(text, out)
    if "ox" in text or "OX" in text:
        for m in _PO_BOX.finditer(text):
            out.append((m.start(), m.end(), "address", _SPACES.sub(" ", m.group(0)).casefold()))
    if "PO " in text or "PSC" in text or "CMR" in text or "US" in text or "Unit" in text:
        for m in _MILITARY.finditer(text):
            out.append((m.start(), m.end(), "address", _SPACES.sub(" ", m.group(0)).casefold()))
    if _DE_HINT.search(text):
        for m in _ADDRESS_DE.finditer(text):
            if _ENGLISH_RING.match(m.group("street")):
                continue  # "the Spring 2024 update", "String 12"
            out.append((m.start(), m.end(), "address", _canonical(m.group("street"))))
    if _FR_HINT.search(text):
        for m in _ADDRESS_FR.finditer(text):
            end = m.end()
            while text[end - 1] in " \t,":
                end -= 1
            out.append((m.start(), end, "address", _canonical(m.group("street"))))
