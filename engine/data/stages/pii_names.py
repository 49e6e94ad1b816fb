"""Person-name detection of the PII stage: names learned from the conversation's hints, signature
blocks and greetings (never from capitalisation alone), their whole-word occurrences, and the
surface form -> full name table (a first or last name alone maps to the full name)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from engine.data.stages.pii_detect import _SPACES
from engine.data.stages.pii_person import only_words
from engine.records import Conversation

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
        if any(w.rstrip(".") in _NOT_NAMES for w in words) or only_words(words):
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
