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
  Last, First        "Whitfield, Dana", "van Leeuwen, Femke" after a cue;
  particles          "Joost van Dijk", "Lieke de Gruyter" with a cue or a census first name;
  Title Name         "Mr. Whitfield", "Dr Sandra Okafor";
  strong cue pair    two capitalised words, not both English, right after "my flatmate", "my
                     mother,", "signed for by" ("my flatmate Dieter Kowalczyk");
  cue Name           one census name after a strong cue: "my name is Dana", "this is Okafor", "ask
                     for Dana", "my husband Paul", "under Whitfield".

Cues are words before the pair ("for", "please add", "my technician") or a verb after it ("said",
"made", "and I"). A word with an accent or a hyphen is no English word ("Ascensión" is not
"ascension"). Country and territory names in 16 languages (Unicode CLDR, via babel) are never
names ("Burkina Faso", "Britische Jungferninseln").

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

from babel import Locale


_UP = "A-ZÀ-ÖØ-ÞĀ-ž"
_LO = "a-zß-öø-ÿĀ-ž"
_TOKEN = rf"[{_UP}](?:['’][{_UP}])?[{_LO}]+(?:[{_UP}][{_LO}]+)?(?:-[{_UP}][{_LO}]+)?"
_PARTICLE = r"(?:da|de|di|do|dos|das|del|della|van|von|der|den|ter|le|la|du|bin|al|el|st\.)"
_GAP = rf"[ \t]+(?:[{_UP}]\.[ \t]+)?(?:{_PARTICLE}[ \t]+){{0,2}}"
_RUN = re.compile(rf"(?<![\w@'’.-]){_TOKEN}(?:{_GAP}{_TOKEN})+(?![\w@'’-])")
_WORD = re.compile(_TOKEN)
_REVERSED = re.compile(
    rf"(?<![\w@'’.-])((?:{_PARTICLE}[ \t]+){{0,2}}{_TOKEN}),[ \t]+({_TOKEN})(?![\w@'’-])"
)
_TITLED = re.compile(
    rf"(?<![\w])(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Mister|Madam|Herr|Frau|Mme|Mlle)\.?[ \t]+"
    rf"((?:{_TOKEN}[ \t]+)?(?:{_PARTICLE}[ \t]+){{0,2}}{_TOKEN})(?=['’]s\b|(?![\w@'’-]))"
)
# a weak cue: the word right before a pair of words that are neither English nor census names
# (or the start of the text, or a sentence or line end)
_WEAK_CUES = tuple("""
by for to with from under is was and of neighbor neighbour landlord mother father son daughter
husband wife read holder buyer named called behalf ask contact hi hey hello dear thanks both
flatmate roommate manager think add added says said technician engineer driver courier rep
representative assistant colleague advisor adviser lawyer accountant me name
""".split())
# a verb that takes a person as its subject, after the pair ("Samuel Sales said", "Urszula
# Herdzik made", "Jelte Jekel and I")
_AFTER_CUE = re.compile(r"[ \t]+(?:and I|and me|said|says|told|asked|will|has|had|placed|made|"
                        r"ordered|signed|paid|bought|promised|confirmed|mentioned|agreed|emailed|"
                        r"phoned|replied|wrote|called|is the|was the|is my|is our|"
                        r"from (?:your|the|our))\b")
# what follows a company named after people: "Roux Hebert SA", "Mack, Johnson and Edwards"
_COMPANY = re.compile(
    r"(?:,?[ \t]+(?:&|and|und|et|y|e)[ \t]+[A-Z][a-z]+\b(?![ \t]+I\b)"
    r"|,[ \t]*[A-Z][a-z]+,?[ \t]+(?:and|&)[ \t]"
    r"|,?[ \t]+(?:Ltd|LLC|L\.L\.C|Inc|Corp|Co|PLC|plc|LLP|LP|GmbH|AG|KG|SE|SA|S\.A|SARL|SAS|BV|NV|"
    r"SpA|S\.p\.A|Srl|S\.r\.l|Sp\.|Group|Partners|Associates|Holdings|Law|Consulting|Ltda|"
    r"e\.V|OHG|Oy|AB|AS|ApS|GbR|UG|KGaA|mbH|PartG|SL|SLU|BVBA|SNC|SCS|SpA|Sp\. z o\.o)\b)"
)
_PAIR_STOP = frozenset({("morgan", "stanley"), ("wells", "fargo"), ("harley", "davidson"),
                        ("marks", "spencer"), ("dolce", "gabbana"), ("johnson", "johnson"),
                        ("jack", "daniels"), ("louis", "vuitton"), ("calvin", "klein")})
# a strong cue: the words right before a name ("my name is", "my flatmate", "signed by")
_STRONG_CUES = tuple("""
my name is|my name's|name is|names are|this is|i am|i'm|call me|ask for|asking for|speak to|
speak with|speaking to|speaking with|talk to|talk with|talking to|talking with|talked to|
talked with|spoke to|spoke with|under|under the name|name:|named|called|account holder|
account holder is|cardholder|cardholder is|husband|wife|son|daughter|mother|father|mom|mum|dad|
brother|sister|partner|colleague|coworker|co-worker|boss|neighbor|neighbour|friend|tenant|
landlord|roommate|flatmate|attn|attn:|c/o|contact person|contact person is|signed by|
signed for by|addressed to|in the name of""".replace("\n", "").split("|"))
_CAPITALISED = re.compile(rf"(?<![\w@'’.-])({_TOKEN})(?![\w@'’-])")
_PARTICLE_IN = re.compile(rf"(?<![\w]){_PARTICLE}[ \t]")


def _ends_with_cue(text: str, lo: int, end: int, cues: tuple[str, ...]) -> bool:
    """Whether text[lo:end], less trailing blanks and commas, ends with one of `cues` as whole
    words (a plain suffix test: this runs for every capitalised pair)."""
    window = text[lo:end].rstrip(" \t,").lower()
    if not window.endswith(cues):
        return False
    return any(window.endswith(c) and (len(window) == len(c) or not window[-len(c) - 1].isalnum())
               for c in cues)


def _strong_before(text: str, start: int) -> bool:
    """A strong cue right before `start`: "my flatmate Dieter", "my mother, Vitor"."""
    return _ends_with_cue(text, max(0, start - 40), start, _STRONG_CUES)


def _weak_before(text: str, start: int) -> bool:
    """A weak cue right before `start`: a cue word, a sentence or line end, the text's start."""
    lo = max(0, start - 24)
    window = text[lo:start].rstrip(" \t,")
    if not window:
        return lo == 0
    return window[-1] in ".!?:»\n" or _ends_with_cue(text, lo, start, _WEAK_CUES)


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


@lru_cache(maxsize=1 << 16)
def _bare(word: str) -> str:
    """The word without a possessive 's."""
    return word[:-2] if word.endswith(("'s", "’s")) else word


@lru_cache(maxsize=1 << 16)
def _key(word: str) -> str:
    """Lower-case ASCII form for lookups: accents dropped, possessive 's dropped."""
    decomposed = unicodedata.normalize("NFKD", _bare(word))
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


@lru_cache(maxsize=1 << 16)
def _english(word: str) -> bool:
    """An English word as written: "Ascensión" is not "ascension", "Hans-Heinrich" is not one
    unless every part is."""
    parts = _bare(word).split("-")
    return all(p.isascii() and p.lower() in english_words() for p in parts)


@lru_cache(maxsize=1 << 16)
def _stop(word: str) -> bool:
    return any(_key(p) in _NOT_NAMES for p in _bare(word).split("-"))


@lru_cache(maxsize=1 << 16)
def _score(word: str, table: frozenset[str]) -> int:
    """2: a name in `table` that is not a word; 1: a name that is also a word; 0: not a name.
    A hyphenated word is a name when one of its parts is ("Hans-Heinrich", "Mary-Kate")."""
    if _stop(word) or not any(_key(p) in table for p in _bare(word).split("-")):
        return 0
    return 1 if _english(word) else 2


def _unknown(word: str) -> bool:
    """Neither a word nor a stop word: "Krzysztof", "Rohleder", "Aarav", "Ascensión"."""
    return not _stop(word) and not _english(word) and len(_key(word)) >= 2


def _plain_case(word: str) -> bool:
    """Capitalised, then lower case, in every hyphenated part (never camel case: "QuietComfort")."""
    return all(p[:1].isupper() and p[1:].islower() for p in _bare(word).split("-"))


def _is_pair(first: str, last: str, cued: bool = False, strong: bool = False,
             particle: bool = False) -> bool:
    """Whether two capitalised words read as a person's first and last name. `cued`: a weak cue
    around them; `strong`: a strong cue right before ("my flatmate"); `particle`: a name particle
    between them ("Jesper van Tours")."""
    firsts, lasts = gazetteer()
    if (_key(first), _key(last)) in _PAIR_STOP or _stop(first) or _stop(last):
        return False
    if (strong or (particle and cued)) and not (_english(first) and _english(last)):
        return True  # "my flatmate Dieter Atzler", "with Lot de Gruil"
    f, s = _score(first, firsts), _score(last, lasts)
    if particle and f and not _english(last):
        return True  # "Marie de Gruil"
    if f and s:
        return f + s >= (2 if cued else 3)
    if s == 2:  # "Krzysztof Nowak", "Hermann Klemm": an unknown first name, a clear surname
        return _unknown(first)
    if f == 2:  # "Dana Hondeveld": a clear first name before an unknown surname
        return _unknown(last) or cued
    if cued and (f or s):  # "for Declan Ford", "Hey, Amber Hondeveld"
        return _unknown(last) if f else _unknown(first)
    # "for Ingolf Jockel": two unknown words after a cue
    return (cued and _unknown(first) and _unknown(last) and _plain_case(first)
            and _plain_case(last) and len(first) <= 20 and len(last) <= 20)


def only_words(words: list[str]) -> bool:
    """True when every word is an English word and none is a census first name: "Order
    Management" under a closing is a team, not a person."""
    firsts = gazetteer()[0]
    keys = [_key(w.rstrip(".,")) for w in words]
    return bool(keys) and all(k in english_words() and k not in firsts for k in keys)


def _cued(text: str, start: int, end: int | None = None) -> bool:
    """A weak cue before `start`, or after `end` ("Jelte Jekel and I", "Samuel Sales said")."""
    return (_weak_before(text, start)
            or (end is not None and _AFTER_CUE.match(text, end) is not None))


# the languages whose country and territory names (CLDR, via babel) are never person names
_PLACE_LOCALES = ("en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "da", "nb", "fi", "cs",
                  "ro", "hu", "tr")


@lru_cache(maxsize=1)
def _places() -> tuple[frozenset[str], frozenset[str]]:
    """(every word-prefix of two words or more of a CLDR territory name, the words of those names
    that are no census name): "Burkina Faso", "Hong Kong" (of "Hong Kong SAR China"), "korea"."""
    firsts, lasts = gazetteer()
    prefixes: set[str] = set()
    words: set[str] = set()
    for code in _PLACE_LOCALES:
        for name in Locale.parse(code).territories.values():
            parts = [_key(w) for w in re.findall(r"[^\W\d_]+", name)]
            prefixes.update(" ".join(parts[:n]) for n in range(2, len(parts) + 1))
            words.update(w for w in parts if len(w) >= 4 and w not in firsts and w not in lasts)
    return frozenset(prefixes), frozenset(words)


def _place(words: list[str]) -> bool:
    """A country or territory name, or words only found in those ("Sierra Leone", "Demokratische
    Volksrepublik Korea")."""
    prefixes, place_words = _places()
    keys = [_key(w) for w in words]
    return " ".join(keys) in prefixes or all(k in place_words for k in keys)


def _surname_like(word: str) -> bool:
    return _score(word, gazetteer()[1]) >= 1 or _unknown(word)


def _from_runs(text: str, found: list[str]) -> None:
    firsts = gazetteer()[0]
    for run in _RUN.finditer(text):
        body, at = run.group(0), run.start()
        words = [(m.start(), m.end()) for m in _WORD.finditer(body)]
        i, free = 0, 0  # free: the first word not yet part of a name
        while i < len(words) - 1:
            first, last = body[slice(*words[i])], body[slice(*words[i + 1])]
            cued = _cued(text, at + words[i][0], at + words[i + 1][1])
            strong = _strong_before(text, at + words[i][0])
            particle = _PARTICLE_IN.search(body, words[i][1], words[i + 1][0]) is not None
            if not _is_pair(first, last, cued, strong, particle):
                i += 1
                continue
            if i > free and _score(body[slice(*words[i - 1])], firsts):
                i -= 1  # "Maria Fernanda Berrocal": a first name before the pair
            j = i + 1  # "Maria Júlia Pinto", "João Vitor da Costa": more names after the pair
            while (j + 1 < len(words) and j - i < 3 and _surname_like(body[slice(*words[j + 1])])
                   and not _COMPANY.match(text, at + words[j][1])):  # not into "Nowak Sp. z o.o."
                j += 1
            name = body[words[i][0]:words[j][1]]
            if not _COMPANY.match(text, at + words[j][1]) and not _place(_WORD.findall(name)):
                found.append(name)
            i = free = j + 1


def free_text_names(texts: list[str]) -> list[str]:
    """Person names found in `texts` without hints, in first-seen order ("Dana Whitfield",
    "Whitfield" after a title or cue); "Last, First" is returned as "First Last"."""
    found: list[str] = []
    firsts, lasts = gazetteer()
    for text in texts:
        _from_runs(text, found)
        if "," in text:
            for m in _REVERSED.finditer(text):  # "Whitfield, Dana", "van Beek, Dana" after a cue
                if _COMPANY.match(text, m.end()):
                    continue  # "Mack, Johnson and Edwards", "Roux, Hebert SA"
                last, first = m.group(1), m.group(2)
                particle = last != last.split()[-1]
                if _cued(text, m.start()) and _is_pair(first, last.split()[-1], True,
                                                       particle=particle):
                    found.append(f"{first} {last}")
        for m in _TITLED.finditer(text):
            name = m.group(1)
            if _key(name.split()[-1]) not in _NOT_NAMES:
                found.append(name)
        for m in _CAPITALISED.finditer(text):  # one census name after a strong cue
            word = m.group(1)
            if ((_score(word, firsts) == 2 or _score(word, lasts) == 2)
                    and _strong_before(text, m.start())
                    and not any(word in name.split() for name in found)):
                found.append(word)
    return list(dict.fromkeys(found))
