"""Speaker labels → ingest roles (user, assistant, system, bot, tool), and 'Speaker: text' lines → turns.

`role_for` maps one label through an input's `speakers` map (engine.config.SpeakerMap),
case-insensitively and after trimming, in this order:
  1. the whole label ("Customer", "support@brightwave.example");
  2. for an e-mail address or "Name <address>": the display name, the full address, the domain
     ("@brightwave.example" in a list matches every address there and in its subdomains),
     then the words of the local part ("support-team@…" → "support");
  3. the label without bracketed parts ("Agent (Maria)", "Support [bot]"), then the bracketed
     part alone ("Maria (Agent)");
  4. a configured label at the end of the label ("Brightwave Bot", "Customer Support" → the last
     words win), then at its start ("Agent Maria Lopez"), then — for a label of capitalised words
     only — anywhere in it ("Brightwave Support Team").
A label listed under two roles takes the first of user, assistant, system, bot, tool.

`parse_turns` splits transcript lines (a CSV cell, a .txt conversation) into turns. A line is a
turn when it starts (after an optional timestamp such as "[10:32]", "10:32:05" or
"2026-03-01 10:32") with "Label:" and the label is known. Other lines continue the previous turn;
lines before the first turn are a header and dropped; a line that is only a bracketed timestamp and
text without a label ("[10:40] Maria joined the chat") is a chat event and dropped. A label that is
not in the map but looks like a speaker (one to three capitalised words or an address) and is
either timestamped or used on two or more lines is an unknown speaker: when it is the only one and
the other side is known (only agents/bots known → it is the customer; only customers known → it is
the agent) its role is inferred, otherwise the conversation is rejected (`unknown_speaker`).
Turns are not merged here (the turns stage does that).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from functools import lru_cache

from engine.config import SpeakerMap

ROLE_ORDER = ("user", "assistant", "system", "bot", "tool")
_AGENT_SIDE = {"assistant", "bot", "system", "tool"}

_BRACKETS = re.compile(r"[(\[]([^)\]]*)[)\]]")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_ADDRESS = re.compile(r"^[\w.+'-]+@[\w-]+(?:\.[\w-]+)+$")
_NAME_WORD = re.compile(r"^[^\W\d_](?:[^\W\d_]|['’.-])*$")
_HEAD = re.compile(r"^((?:[^:\[(\n]|\[[^\]\n]*\]|\([^)\n]*\)){1,64}?):(?!//)(.*)$", re.S)
_TIME = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:\s?[AaPp]\.?[Mm]\.?)?"
_DATE = r"(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}\.\d{1,2}\.\d{2,4})"
_ZONE = r"(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
_STAMP = re.compile(rf"^\s*(?:(?P<b>[\[(])\s*(?:{_DATE}[T ,]+)?{_TIME}{_ZONE}\s*[\])]|"
                    rf"(?:{_DATE}[T ,]+)?{_TIME}{_ZONE}(?=\s))\s*(?:[-–—|]\s*)?")


# ---------------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class _Table:
    exact: dict[str, str]
    domains: dict[str, str]
    words: tuple[tuple[tuple[str, ...], str], ...]  # longest label first
    seen: dict[str, str | None] = field(default_factory=dict, compare=False)  # label → role


def _norm(text: str) -> str:
    return " ".join(text.strip().strip("*_`\"'").rstrip(":").strip().casefold().split())


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.casefold() for w in _WORD.findall(text))


@lru_cache(maxsize=64)
def _table(lists: tuple[tuple[str, ...], ...]) -> _Table:
    exact: dict[str, str] = {}
    domains: dict[str, str] = {}
    words: dict[tuple[str, ...], str] = {}
    for role, labels in zip(ROLE_ORDER, lists):
        for label in labels:
            key = _norm(label)
            if not key:
                continue
            if key.startswith("@"):
                domains.setdefault(key, role)
                continue
            exact.setdefault(key, role)
            if "@" not in key and (w := _words(key)):
                words.setdefault(w, role)
    ordered = tuple(sorted(words.items(), key=lambda kv: -len(kv[0])))
    return _Table(exact, domains, ordered)


def _table_for(speakers: SpeakerMap) -> _Table:
    return _table(tuple(tuple(getattr(speakers, role)) for role in ROLE_ORDER))


def _titled(text: str) -> bool:
    words = _WORD.findall(text)
    return 1 <= len(words) <= 5 and all(w[0].isupper() for w in words)


def _by_words(words: tuple[str, ...], table: _Table, titled: bool = False) -> str | None:
    if not 1 <= len(words) <= 6:
        return None
    for label, role in table.words:  # a configured label closing the speaker label
        n = len(label)
        if n <= len(words) and len(words) - n <= 3 and words[-n:] == label:
            return role
    for label, role in table.words:  # … or opening it
        n = len(label)
        if n <= len(words) and len(words) - n <= 2 and words[:n] == label:
            return role
    if titled:  # "Brightwave Home Support Team": a name-like label containing a configured one
        for end in range(len(words), 0, -1):
            for label, role in table.words:
                n = len(label)
                if n <= end and words[end - n:end] == label:
                    return role
    return None


def _by_address(label: str, table: _Table) -> str | None:
    name, addr = parseaddr(label)
    addr = addr.strip().casefold()
    if name.strip():
        role = _match(name, table, nested=True)
        if role:
            return role
    if not _ADDRESS.match(addr):
        return None
    if addr in table.exact:
        return table.exact[addr]
    local, _, domain = addr.rpartition("@")
    parts = domain.split(".")
    for i in range(len(parts) - 1):
        role = table.domains.get("@" + ".".join(parts[i:]))
        if role:
            return role
    if local in table.exact:
        return table.exact[local]
    return _by_words(tuple(w for w in re.split(r"[._+\-]+", local) if w), table)


def _match(label: str, table: _Table, nested: bool = False) -> str | None:
    key = _norm(label)
    if not key or len(key) > 200:
        return None
    if key in table.exact:
        return table.exact[key]
    if "@" in key and not nested:
        return _by_address(label, table)
    inner = [_norm(m) for m in _BRACKETS.findall(key)]
    if inner:
        stripped = _norm(_BRACKETS.sub(" ", key))
        if stripped in table.exact:
            return table.exact[stripped]
        role = _by_words(_words(stripped), table, _titled(_BRACKETS.sub(" ", label)))
        if role:
            return role
        for part in inner:
            if part in table.exact:
                return table.exact[part]
        return None
    return _by_words(_words(key), table, _titled(label))


def _lookup(label: str, table: _Table) -> str | None:
    """_match, remembered per label (transcripts repeat the same few labels on every line)."""
    if label in table.seen:
        return table.seen[label]
    if len(table.seen) >= 50_000:
        table.seen.clear()
    role = table.seen[label] = _match(label, table)
    return role


def role_for(label: str, speakers: SpeakerMap) -> str | None:
    """The role ("user", "assistant", "system", "bot" or "tool") of a speaker label, or None."""
    return _lookup(label, _table_for(speakers))


def _labelish(text: str) -> bool:
    """One to three words, each starting with a capital letter: "Maria", "Ana Ruiz", "O'Neil"."""
    words = text.split()
    return (1 <= len(words) <= 3 and len(text) <= 40
            and all(_NAME_WORD.match(w) and w[0].isupper() for w in words))


def looks_like_speaker(label: str) -> bool:
    """One to three capitalised words ("Maria", "Ana Ruiz", "Maria (Brightwave)") or an address."""
    text = " ".join(_BRACKETS.sub(" ", label).strip().strip("*_").split())
    return bool(text) and bool(_ADDRESS.match(text) or _labelish(text))


def _name_of(label: str, table: _Table) -> str | None:
    """A person's name in a customer label: "Customer (Ana Ruiz)", "Customer Ana Ruiz" and
    "Ana Ruiz" → "Ana Ruiz"; "Customer" → None."""
    for part in _BRACKETS.findall(label):
        part = " ".join(part.split())
        if _labelish(part) and _norm(part) not in table.exact:
            return part
    words = _BRACKETS.sub(" ", label).strip().strip("*_").split()
    while words and _norm(words[0]) in table.exact:
        words = words[1:]
    while words and _norm(words[-1]) in table.exact:
        words = words[:-1]
    text = " ".join(words)
    return text if text and _labelish(text) else None


# ---------------------------------------------------------------------------------- transcripts
@dataclass
class Turn:
    role: str
    text: str
    line: int  # line number of the turn's first line (as numbered by the caller)


@dataclass
class ParsedTurns:
    turns: list[Turn] = field(default_factory=list)
    unknown_line: int | None = None  # first line of an unknown speaker: reject the conversation
    names: list[str] = field(default_factory=list)  # customer names seen in speaker labels


def split_line(line: str) -> tuple[bool, bool, str | None, str]:
    """(timestamped, bracketed timestamp, speaker head or None, rest) of one transcript line."""
    stamp = _STAMP.match(line)
    rest = line[stamp.end():] if stamp else line
    m = _HEAD.match(rest)
    head = m.group(1).strip() if m and m.group(1).strip() else None
    body = m.group(2) if m and head else rest
    return stamp is not None, bool(stamp and stamp.group("b")), head, body


def parse_turns(lines: Sequence[tuple[int, str]], speakers: SpeakerMap) -> ParsedTurns:
    """Split numbered transcript lines into turns (rules in the module docstring)."""
    table = _table_for(speakers)
    # (kind, line, role-or-key, text after the label, head, raw line): turn | cand | event | text
    entries: list[tuple[str, int, str, str, str, str]] = []
    cand_lines: Counter[str] = Counter()
    stamped_cands: set[str] = set()
    for line_no, raw in lines:
        stamped, bracketed, head, body = split_line(raw)
        role = _lookup(head, table) if head else None
        if head and role:
            entries.append(("turn", line_no, role, body.strip(), head, raw))
        elif head and looks_like_speaker(head):
            key = _norm(head)
            entries.append(("cand", line_no, key, body.strip(), head, raw))
            cand_lines[key] += 1
            if stamped:
                stamped_cands.add(key)
        elif stamped and bracketed and not head:
            entries.append(("event", line_no, "", "", "", raw))
        else:
            entries.append(("text", line_no, "", "", "", raw))
    unknown = {k for k, n in cand_lines.items() if n >= 2 or k in stamped_cands}
    out = ParsedTurns()
    inferred: dict[str, str] = {}
    if unknown:
        known = {e[2] for e in entries if e[0] == "turn"}
        if len(unknown) == 1 and known and known <= _AGENT_SIDE and known & {"assistant", "bot"}:
            inferred = {next(iter(unknown)): "user"}
        elif len(unknown) == 1 and "user" in known and "assistant" not in known:
            inferred = {next(iter(unknown)): "assistant"}
        else:
            out.unknown_line = next(e[1] for e in entries if e[0] == "cand" and e[2] in unknown)
            return out
    parts: list[list[str]] = []
    for kind, line_no, key, text, head, raw in entries:
        role = key if kind == "turn" else inferred.get(key) if kind == "cand" else None
        if role is not None:
            out.turns.append(Turn(role, "", line_no))
            parts.append([text])
            name = _name_of(head, table) if role == "user" else None
            if name and name not in out.names:
                out.names.append(name)
        elif kind != "event" and parts:
            parts[-1].append(raw)
    for turn, chunk in zip(out.turns, parts):
        turn.text = "\n".join(chunk).strip()
    return out

