"""Normalize stage: unicode form (NFC/NFKC), line endings, control characters, whitespace; drops empty turns.

With `collapse_whitespace`, every run of spaces/tabs (any horizontal whitespace) becomes one space,
each line is stripped, runs of blank lines become one blank line, and the text is stripped; single
newlines are kept. Empty turns are dropped; a conversation left with no turns is passed on
(the quality stage rejects it with a reason).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from engine.config import NormalizeSpec
from engine.records import Conversation

STAGE = "normalize"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HSPACE = re.compile(r"[^\S\n]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


@dataclass
class NormalizeStats:
    records: int = 0
    changed: int = 0
    turns_dropped: int = 0


def normalize_text(text: str, spec: NormalizeSpec) -> str:
    text = unicodedata.normalize(spec.unicode_form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if spec.collapse_whitespace:
        text = "\n".join(_HSPACE.sub(" ", line).strip() for line in text.split("\n"))
        text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def normalize_conversation(conv: Conversation, spec: NormalizeSpec) -> tuple[Conversation, int]:
    """(normalized copy, number of turns dropped because they were empty)."""
    messages = []
    for msg in conv.messages:
        content = normalize_text(msg["content"], spec)
        if content:
            messages.append({**msg, "content": content})
    return replace(conv, messages=messages), len(conv.messages) - len(messages)


def normalize(records: Iterable[Conversation], spec: NormalizeSpec,
              stats: NormalizeStats | None = None) -> Iterator[Conversation]:
    for conv in records:
        out, dropped = normalize_conversation(conv, spec)
        if stats is not None:
            stats.records += 1
            stats.turns_dropped += dropped
            stats.changed += out.messages != conv.messages
        yield out
