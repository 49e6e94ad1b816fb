"""Normalize stage: HTML to text, mojibake repair, unicode form, line endings, control characters, whitespace.

Per turn, in this order:
  1. `strip_html`: a turn that looks like HTML (a known tag or an entity, engine.data.html_text)
     becomes its visible text, one line per block element;
  2. `fix_mojibake`: ftfy repairs text that was decoded with the wrong codec ("donâ€™t" → "don’t",
     "GrÃ¼ÃŸe" → "Grüße") and drops terminal colour codes. Its other fixers (quote uncurling, width
     and ligature folding, HTML unescaping, its own unicode normalization) are off, so correctly
     decoded text is left exactly as it was; pure-ASCII text is skipped (nothing to repair);
  3. the unicode form (NFC/NFKC), CR/CRLF → LF, ASCII control characters and invisible word
     splitters (zero-width space, word joiner, BOM, soft hyphen) removed;
  4. with `collapse_whitespace`, every run of spaces/tabs (any horizontal whitespace) becomes one
     space, each line is stripped, runs of blank lines become one blank line, and the text is
     stripped; single newlines are kept.
Empty turns are dropped; a conversation left with no turns is passed on (the quality stage
rejects it with a reason).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import ftfy

from engine.config import NormalizeSpec
from engine.data.html_text import html_to_text, looks_like_html
from engine.records import Conversation

STAGE = "normalize"
# ASCII control characters, and invisible characters that only split words: zero-width space,
# word joiner, stray byte-order marks, soft hyphens (ZWJ/ZWNJ stay: emoji and Persian need them)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u2060\ufeff\u00ad]")
_HSPACE = re.compile(r"[^\S\n]+")
_BLANK_RUNS = re.compile(r"\n{3,}")
# Only the encoding repairs: everything that would change correctly decoded text is off.
_FTFY = ftfy.TextFixerConfig(
    unescape_html=False, remove_terminal_escapes=True, fix_encoding=True, restore_byte_a0=True,
    replace_lossy_sequences=True, decode_inconsistent_utf8=True, fix_c1_controls=True,
    fix_latin_ligatures=False, fix_character_width=False, uncurl_quotes=False,
    fix_line_breaks=False, fix_surrogates=True, remove_control_chars=False, normalization=None,
    explain=False)


@dataclass
class NormalizeStats:
    records: int = 0
    changed: int = 0
    turns_dropped: int = 0
    fixes: Counter = field(default_factory=Counter)  # turns per fix: html, mojibake


def fix_mojibake(text: str) -> str:
    if text.isascii() and "\x1b" not in text:
        return text
    return ftfy.fix_text(text, _FTFY)


def normalize_text(text: str, spec: NormalizeSpec, fixes: Counter | None = None) -> str:
    """Normalized `text`; `fixes` counts the turns that needed HTML stripping / mojibake repair."""
    if spec.strip_html and looks_like_html(text):
        text = html_to_text(text)
        if fixes is not None:
            fixes["html"] += 1
    if spec.fix_mojibake:
        fixed = fix_mojibake(text)
        if fixed != text and fixes is not None:
            fixes["mojibake"] += 1
        text = fixed
    text = unicodedata.normalize(spec.unicode_form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if spec.collapse_whitespace:
        text = "\n".join(_HSPACE.sub(" ", line).strip() for line in text.split("\n"))
        text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def normalize_conversation(conv: Conversation, spec: NormalizeSpec,
                           fixes: Counter | None = None) -> tuple[Conversation, int]:
    """(normalized copy, number of turns dropped because they were empty)."""
    messages = []
    for msg in conv.messages:
        content = normalize_text(msg["content"], spec, fixes)
        if content:
            messages.append({**msg, "content": content})
    return replace(conv, messages=messages), len(conv.messages) - len(messages)


def normalize(records: Iterable[Conversation], spec: NormalizeSpec,
              stats: NormalizeStats | None = None) -> Iterator[Conversation]:
    for conv in records:
        out, dropped = normalize_conversation(conv, spec, stats.fixes if stats is not None else None)
        if stats is not None:
            stats.records += 1
            stats.turns_dropped += dropped
            stats.changed += out.messages != conv.messages
        yield out
