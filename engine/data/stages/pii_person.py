"""Person names in free text, for the PII stage: a gazetteer tagger over the US census name lists.

The `names` package ships the 1990 US census lists: 5,163 first names and 88,799 surnames
(which, the US being what it is, hold most European, Hispanic, Indian, African and Asian
surnames too). A name is found, without any column, signature or greeting announcing it, as:

  First Last         two or three capitalised words ("Dana Whitfield", "Mary J. Blige", "Ana da
                     Silva") where the first is a census first name and the last a census surname,
                     and at least one of the two is not also an English word ("Mark Johnson" yes,
                     "Will Price" no: "will" and "price" are words — english_words.txt.gz, SCOWL);
  Unknown Last       a word that is neither English nor a census surname before a census surname
                     that is not a word ("Krzysztof Nowak", "Jürgen Rohleder");
  First Unknown      a census first name that is not a word before a word that is neither
                     English nor a stop word ("Dana Xiao-Whitmore");
  Last, First        "Whitfield, Dana";
  Title Name         "Mr. Whitfield", "Dr Sandra Okafor";
  cue Name           one census name after a cue: "my name is Dana", "this is Okafor", "ask for
                     Dana", "my husband Paul", "under Whitfield".

What it does not find: names written in lower case, names that are common words with no partner
("Will called"), and first names unknown to the census with no surname ("Priya"). Brand and product
words (Alexa, Mac Mini, Chase Bank) are never names. The names it finds join those from hints,
signatures and greetings (pii_names.py): every occurrence in every turn of the conversation, and of
each part of three letters or more, gets the same <PERSON_n>.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from functools import lru_cache
from importlib import resources


_UP = "A-ZÀ-ÖØ-ÞĀ-ž"
_LO = "a-zß-öø-ÿĀ-ž"
_TOKEN = rf"[{_UP}](?:['’][{_UP}])?[{_LO}]+(?:[{_UP}][{_LO}]+)?(?:-[{_UP}][{_LO}]+)?"
_PARTICLE = r"(?:da|de|di|do|dos|das|del|della|van|von|der|den|ter|le|la|du|bin|al|el|st\.)"
_GAP = rf"[ \t]+(?:[{_UP}]\.[ \t]+)?(?:{_PARTICLE}[ \t]+){{0,2}}"
_RUN = re.compile(rf"(?<![\w@'’.-]){_TOKEN}(?:{_GAP}{_TOKEN})+(?![\w@'’-])")
_WORD = re.compile(_TOKEN)
_REVERSED = re.compile(rf"(?<![\w@'’.-])({_TOKEN}),[ \t]+({_TOKEN})(?![\w@'’-])")
_TITLED = re.compile(
    rf"(?<![\w])(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Mister|Madam|Herr|Frau|Mme|Mlle)\.?[ \t]+"
    rf"((?:{_TOKEN}[ \t]+)?(?:{_PARTICLE}[ \t]+){{0,2}}{_TOKEN})(?=['’]s\b|(?![\w@'’-]))"
)
# a weak cue: the word before a pair of words that are neither English nor census names
_WEAK_CUE = re.compile(
    r"(?i:\b(?:by|for|to|with|from|under|is|was|and|of|neighbou?r|landlord|mother|father|son|"
    r"daughter|husband|wife|read|holder|buyer|named|called|behalf|ask|contact|hi|hey|hello|dear|"
    r"thanks|both|flatmate|roommate|manager|think|added|says|said|"
    r"(?:me|name)[ \t]*:?)|^|[.!?:»\n])[ \t,]*$"
)
_AFTER_CUE = re.compile(r"[ \t]+(?:and I|and me|said|says|will|has|had|placed|wrote|called|"
                        r"is the|was the|is my|is our|from (?:your|the|our))\b")
# what follows a company named after people: "Roux Hebert SA", "Mack, Johnson and Edwards"
_COMPANY = re.compile(
    r"(?:,?[ \t]+(?:&|and|und|et|y|e)[ \t]+[A-Z][a-z]+\b(?![ \t]+I\b)"
    r"|,[ \t]*[A-Z][a-z]+,?[ \t]+(?:and|&)[ \t]"
    r"|,?[ \t]+(?:Ltd|LLC|L\.L\.C|Inc|Corp|Co|PLC|plc|LLP|LP|GmbH|AG|KG|SE|SA|S\.A|SARL|SAS|BV|NV|"
    r"SpA|S\.p\.A|Srl|S\.r\.l|Sp\.|Group|Partners|Associates|Holdings|Law|Consulting|Ltda|"
    r"e\.V|OHG|Oy|AB|AS|ApS)\b)"
)
_PAIR_STOP = frozenset({("morgan", "stanley"), ("wells", "fargo"), ("harley", "davidson"),
                        ("marks", "spencer"), ("dolce", "gabbana"), ("johnson", "johnson"),
                        ("jack", "daniels"), ("louis", "vuitton"), ("calvin", "klein")})
_CUED = re.compile(
    r"(?i:\b(?:my name is|my name's|name is|names are|this is|i am|i'm|call me|ask for|asking for|"
    r"speak(?:ing)? (?:to|with)|talk(?:ing|ed)? (?:to|with)|spoke (?:to|with)|under(?: the name)?|"
    r"name:|named|called|account holder(?: is)?|cardholder(?: is)?|husband|wife|son|daughter|"
    r"mother|father|mom|mum|dad|brother|sister|partner|colleague|coworker|co-worker|boss|"
    r"neighbou?r|friend|tenant|landlord|roommate|attn:?|c/o|contact person(?: is)?|signed by|"
    r"addressed to|in the name of))[ \t]+"
    rf"({_TOKEN})(?![\w@'’-])"
)
# capitalised words that are never a person's name here, whatever the census says
_NOT_NAMES = frozenset("""
alexa siri cortana google bixby echo mac mini pro max plus ultra air home hub dot nest ring
chase visa prime galaxy pixel surface office windows dell porsche tesla
jeep dodge chevy chevrolet cadillac buick harley fargo schwab
sachs fidelity marriott hyatt disney nike adidas puma vans apple amazon
microsoft samsung sony lg philips bosch siemens miele dyson roku kindle fire stick
service support team customer agent manager admin staff billing sales desk help care
monday tuesday wednesday thursday friday saturday sunday january february march
september october november december christmas easter thanksgiving british american
north south east west new old san santa saint sainte sao st fort port mount mt lake glen palm los las
ltd llc inc corp co plc llp gmbh ag kg sa sarl sas bv nv spa srl ltda oy ab group partners
el la le des del de da du van von the and or but if my your our their his her its this that
dear hi hello hey thanks thank regards best cheers sincerely yours kind warm
please can could would will is are was yes no ok okay here there we you i it so
mr mrs ms mx miss dr prof mister madam sir herr frau mme mlle monsieur madame senor senora sr sra
hallo bonjour salut hola ciao moin guten liebe lieber sehr geehrter geehrte grusse gruss merci
danke gracias grazie obrigado
""".split())


def _key(word: str) -> str:
    """Lower-case ASCII form for lookups: accents dropped, possessive 's dropped."""
    if word.endswith(("'s", "’s")):
        word = word[:-2]
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


@lru_cache(maxsize=1)
def gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, surnames), lower-case ASCII, from the census lists in the `names` package."""
    folder = resources.files("names")

    def read(*files: str) -> frozenset[str]:
        out: set[str] = set()
        for name in files:
            text = (folder / name).read_text(encoding="ascii")
            out.update(line.split(None, 1)[0].lower() for line in text.splitlines() if line.strip())
        return frozenset(out)

    return read("dist.male.first", "dist.female.first"), read("dist.all.last")


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Lower-case English words (SCOWL, via scripts/make_english_words.py)."""
    data = (resources.files("engine.data.stages") / "english_words.txt.gz").read_bytes()
    return frozenset(gzip.decompress(data).decode("ascii").split())


def _score(word: str, table: frozenset[str]) -> int:
    """2: a name in `table` that is not a word; 1: a name that is also a word; 0: not a name."""
    key = _key(word)
    if key in _NOT_NAMES or key not in table:
        return 0
    return 1 if key in english_words() else 2


def _unknown(word: str) -> bool:
    """Neither a word nor a stop word: "Krzysztof", "Rohleder", "Aarav"."""
    key = _key(word)
    return key not in _NOT_NAMES and key not in english_words() and len(key) >= 2


def _is_pair(first: str, last: str, cued: bool = False) -> bool:
    firsts, lasts = gazetteer()
    if (_key(first), _key(last)) in _PAIR_STOP:
        return False
    f, s = _score(first, firsts), _score(last, lasts)
    if f and s:
        return f + s >= (2 if cued else 3)
    if s == 2:  # "Krzysztof Nowak", "Hermann Klemm": an unknown first name, a clear surname
        return _unknown(first)
    if f == 2:  # "Dana Hondeveld": a clear first name before an unknown surname
        return _unknown(last) or (cued and _key(last) not in _NOT_NAMES)
    if cued and (f or s):  # "for Declan Ford", "Hey, Amber Hondeveld"
        return _unknown(last) if f else _unknown(first)
    # "for Ingolf Jockel": two unknown words after a cue (never camel case: "QuietComfort")
    return (cued and _unknown(first) and _unknown(last) and first[1:].islower()
            and last[1:].replace("-", "").islower() and len(first) <= 12 and len(last) <= 12)


def only_words(words: list[str]) -> bool:
    """True when every word is an English word and none is a census first name: "Order
    Management" under a closing is a team, not a person."""
    firsts = gazetteer()[0]
    keys = [_key(w.rstrip(".,")) for w in words]
    return bool(keys) and all(k in english_words() and k not in firsts for k in keys)


def _cued(text: str, start: int, end: int | None = None) -> bool:
    """A weak cue before `start`, or after `end` ("Jelte Jekel and I", "Samuel Sales said")."""
    return (_WEAK_CUE.search(text, max(0, start - 24), start) is not None
            or (end is not None and _AFTER_CUE.match(text, end) is not None))


def _surname_like(word: str) -> bool:
    return _score(word, gazetteer()[1]) >= 1 or _unknown(word)


def _from_runs(text: str, found: list[str]) -> None:
    for run in _RUN.finditer(text):
        body = run.group(0)
        words = [(m.start(), m.end()) for m in _WORD.finditer(body)]
        i = 0
        while i < len(words) - 1:
            first, last = body[slice(*words[i])], body[slice(*words[i + 1])]
            cued = _cued(text, run.start() + words[i][0], run.start() + words[i + 1][1])
            if not _is_pair(first, last, cued):
                i += 1
                continue
            j = i + 1  # "Maria Júlia Pinto", "João Vitor da Costa": more names after the pair
            while j + 1 < len(words) and j - i < 3 and _surname_like(body[slice(*words[j + 1])]):
                j += 1
            if not _COMPANY.match(text, run.start() + words[j][1]):
                found.append(body[words[i][0]:words[j][1]])
            i = j + 1


def free_text_names(texts: list[str]) -> list[str]:
    """Person names found in `texts` without hints, in first-seen order ("Dana Whitfield",
    "Whitfield" after a title or cue); "Last, First" is returned as "First Last"."""
    found: list[str] = []
    firsts, lasts = gazetteer()
    for text in texts:
        _from_runs(text, found)
        if "," in text:
            for m in _REVERSED.finditer(text):  # "Whitfield, Dana" only after a cue
                if _COMPANY.match(text, m.end()):
                    continue  # "Mack, Johnson and Edwards", "Roux, Hebert SA"
                if _cued(text, m.start()) and _is_pair(m.group(2), m.group(1), True):
                    found.append(f"{m.group(2)} {m.group(1)}")
        for m in _TITLED.finditer(text):
            name = m.group(1)
            if _key(name.split()[-1]) not in _NOT_NAMES:
                found.append(name)
        for m in _CUED.finditer(text):
            word = m.group(1)
            if _score(word, firsts) == 2 or _score(word, lasts) == 2:
                found.append(word)
    return list(dict.fromkeys(found))
