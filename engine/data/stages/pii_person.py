"""Person names in free text, for the PII stage: a gazetteer tagger over the US census name lists.

The `names` package ships the 1990 US census lists: 5,163 first names and 88,799 surnames
(which, the US being what it is, hold most European, Hispanic, Indian, African and Asian
surnames too). A name is found, without any column, signature or greeting announcing it, as:

  First Last         two or three capitalised words ("Dana Whitfield", "Mary J. Blige", "Ana da
                     Silva") where the first is a census first name and the last a census surname,
                     and at least one of the two is not also a common English word ("Mark Johnson"
                     yes, "Will Price" no: "will" and "price" are words — see pii_name_words.py);
  Unknown Last       a first name the census does not know, written with a letter beyond ASCII,
                     before a surname that is not a word ("Jürgen Okafor", "Zoë Whitfield");
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

import re
import unicodedata
from functools import lru_cache
from importlib import resources

from engine.data.stages.pii_name_words import COMMON_WORD_NAMES

_UP = "A-ZÀ-ÖØ-Þ"
_LO = "a-zß-öø-ÿ"
_TOKEN = rf"[{_UP}](?:['’][{_UP}])?[{_LO}]+(?:[{_UP}][{_LO}]+)?(?:-[{_UP}][{_LO}]+)?"
_PARTICLE = r"(?:da|de|di|do|dos|das|del|della|van|von|der|den|ter|le|la|du|bin|al|el|st\.)"
_GAP = rf"[ \t]+(?:[{_UP}]\.[ \t]+)?(?:{_PARTICLE}[ \t]+){{0,2}}"
_RUN = re.compile(rf"(?<![\w@'’.-]){_TOKEN}(?:{_GAP}{_TOKEN})+(?![\w@'’-])")
_WORD = re.compile(_TOKEN)
_REVERSED = re.compile(rf"(?<![\w@'’.-])({_TOKEN}),[ \t]+({_TOKEN})(?![\w@'’-])")
_TITLED = re.compile(
    rf"(?<![\w])(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Mister|Madam|Herr|Frau|Mme|Mlle)\.?[ \t]+"
    rf"((?:{_TOKEN}[ \t]+)?{_TOKEN})(?![\w@'’-])"
)
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
chase visa prime galaxy pixel surface office windows dell ford lincoln mercedes porsche tesla
jeep dodge chevy chevrolet cadillac mercury buick harley wells fargo morgan stanley schwab
goldman sachs fidelity marriott hilton hyatt disney nike adidas jordan puma vans apple amazon
microsoft samsung sony lg philips bosch siemens miele dyson roku kindle fire stick
service support team customer agent manager admin staff billing sales desk help care
monday tuesday wednesday thursday friday saturday sunday january february march april may
june july august september october november december christmas easter thanksgiving
north south east west new old san santa saint st fort port mount mt lake glen palm los las
el la le des del de da du van von the and or but if my your our their his her its this that
dear hi hello hey thanks thank regards best cheers sincerely yours kind warm
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


def _score(word: str, table: frozenset[str]) -> int:
    """2: a name in `table` that is not a word; 1: a name that is also a common word; 0: not."""
    key = _key(word)
    if key in _NOT_NAMES or key not in table:
        return 0
    return 1 if key in COMMON_WORD_NAMES else 2


def _is_pair(first: str, last: str) -> bool:
    firsts, lasts = gazetteer()
    f, s = _score(first, firsts), _score(last, lasts)
    if f and s:
        return f + s >= 3
    if s == 2 and f == 0 and not first.isascii():  # "Jürgen Rohleder", "Zoë Okafor"
        key = _key(first)
        return key not in _NOT_NAMES and key not in COMMON_WORD_NAMES
    return False


def _from_runs(text: str, found: list[str]) -> None:
    for run in _RUN.finditer(text):
        words = [(m.start(), m.end()) for m in _WORD.finditer(run.group(0))]
        i = 0
        while i < len(words) - 1:
            first = run.group(0)[words[i][0]:words[i][1]]
            j = i + 1
            # "Mary Ann Smith": a second first name before the surname
            if j + 1 < len(words):
                middle = run.group(0)[words[j][0]:words[j][1]]
                last = run.group(0)[words[j + 1][0]:words[j + 1][1]]
                if _score(middle, gazetteer()[0]) and _is_pair(first, last):
                    found.append(run.group(0)[words[i][0]:words[j + 1][1]])
                    i = j + 2
                    continue
            last = run.group(0)[words[j][0]:words[j][1]]
            if _is_pair(first, last):
                found.append(run.group(0)[words[i][0]:words[j][1]])
                i = j + 1
            else:
                i += 1


def free_text_names(texts: list[str]) -> list[str]:
    """Person names found in `texts` without hints, in first-seen order ("Dana Whitfield",
    "Whitfield" after a title or cue); "Last, First" is returned as "First Last"."""
    found: list[str] = []
    firsts, lasts = gazetteer()
    for text in texts:
        _from_runs(text, found)
        if "," in text:
            for m in _REVERSED.finditer(text):
                if _is_pair(m.group(2), m.group(1)) and not _is_pair(m.group(1), m.group(2)):
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
