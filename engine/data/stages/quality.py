"""Quality stage: the gate every training conversation must pass (shape, size, garbage, repetition, language).

Reasons, checked in this order (only the first failure is reported; details carry numbers and
language codes, never text):
  too_few_turns / too_many_turns  non-system turns outside [min_turns, max_turns]
  no_user_turn                     no user turn at all
  no_final_assistant_turn          no assistant turn, or the last turn is not the assistant's
  too_short / too_long             characters of all non-system turns outside [min_chars, max_chars]
  garbage                          letters / non-space characters below min_alpha_ratio (judged
                                   from 20 non-space characters on; letters inside ASCII tokens
                                   longer than 40 characters - base64, hashes - do not count, URLs
                                   excepted); or more than half of the letters in keyboard mashing
                                   (ASCII words of 4+ letters along a keyboard row, "jjjj" runs,
                                   "sdfsdf" repeats, lowercase without a vowel; from 12 letters on)
  repetitive                       the larger of two shares above max_repetition: characters in
                                   lines that repeat an earlier line (needs >= 4 lines), and words
                                   covered by word 3-grams occurring more than once within their
                                   turn (needs >= 30 words). A normal support thread stays far
                                   below 0.5; a bot loop, a log pasted twice, "lol lol lol…" does not
  echo                             every assistant turn repeats a customer turn (test sessions,
                                   copy-paste loops: "test test 123" / "test test 123")
  wrong_language                   `languages` is set and the user+assistant text is confidently
                                   in another language (engine.data.stages.language); text too
                                   short or ambiguous to tell is never rejected for its language
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

from engine.config import QualitySpec
from engine.data.stages import language
from engine.records import Conversation, Reject

STAGE = "quality"
LONG_TOKEN = 40        # an ASCII token longer than this is not a word
MIN_LINES = 4          # the duplicate-line share needs this many non-empty lines
MIN_WORDS = 30         # the repeated-3-gram share needs this many words
MIN_GARBAGE_CHARS = 20  # the letter ratio of less text than this says nothing ("48213?" / "Ok.")
_WORD = re.compile(r"\w+")
MAX_MASH_SHARE = 0.5   # above this share of letters in mashed words a record is garbage
MIN_MASH_LETTERS = 12  # "hmmm" / "ok" is too little to judge


def _keyboard_runs() -> re.Pattern[str]:
    """4 neighbouring keys of the home or bottom row, 5 of the top row ("property" has "erty")."""
    runs = set()
    for row, n in (("qwertyuiop", 5), ("asdfghjkl", 4), ("zxcvbnm", 4)):
        for seq in (row, row[::-1]):
            runs.update(seq[i:i + n] for i in range(len(seq) - n + 1))
    return re.compile("|".join(sorted(runs)))


# An ASCII word of 4+ letters is mashed when it runs along a keyboard row ("asdf", "qwerty"), is
# lowercase without a vowel ("hjkl", "sdfsdf"), has 4 identical letters in a row ("jjjj") or is
# one chunk repeated ("asdasd", "hahaha").
_LETTERS = re.compile(r"[^\W\d_]+")
_KEYBOARD = _keyboard_runs()
_NO_VOWEL = re.compile(r"^[^aeiouy]+$")
_RUN = re.compile(r"(.)\1{3}")
_CHUNKS = re.compile(r"^(?:(..)\1{2,}|(.{3,4})\2+).?$")
_URL = re.compile(r"(?:https?://|www\.)[\w.-]+\.[a-z]{2,}(?:[/?#]\S*)?$", re.I)


def alpha_ratio(text: str) -> float:
    """Letters in word-like tokens / non-space characters (1.0 below MIN_GARBAGE_CHARS)."""
    tokens = text.split()
    total = sum(len(t) for t in tokens)
    if total < MIN_GARBAGE_CHARS:
        return 1.0
    kept = "".join(t for t in tokens
                   if not (len(t) > LONG_TOKEN and t.isascii() and not _URL.match(t)))
    letters = sum(map(str.isalpha, kept))  # map over characters runs in C
    return letters / total


def mash_share(text: str) -> float:
    """Letters in keyboard-mashing words / all letters (0.0 below MIN_MASH_LETTERS letters)."""
    total = mashed = 0
    for word in _LETTERS.findall(text):
        total += len(word)
        if len(word) >= 4 and word.isascii():
            low = word.lower()
            if (_KEYBOARD.search(low) or _RUN.search(low) or _CHUNKS.match(low)
                    or (word.islower() and _NO_VOWEL.match(word))):
                mashed += len(word)
    return mashed / total if total >= MIN_MASH_LETTERS else 0.0


def duplicate_line_share(texts: list[str]) -> float:
    """Characters in lines that repeat an earlier line (case-folded) / characters in all lines."""
    lines = [line.strip().casefold() for t in texts for line in t.split("\n") if line.strip()]
    if len(lines) < MIN_LINES:
        return 0.0
    seen: set[str] = set()
    dup = 0
    for line in lines:
        if line in seen:
            dup += len(line)
        else:
            seen.add(line)
    return dup / sum(len(line) for line in lines)


def repeated_trigram_share(texts: list[str]) -> float:
    """Share of words covered by a word 3-gram that occurs more than once in the same turn.

    Within a turn only: an agent repeating "Is there anything else I can help you with?" in two
    replies, or restating the customer's question, is normal; a turn repeating itself is not.
    """
    turns = [_WORD.findall(t.casefold()) for t in texts]
    n_words = sum(len(w) for w in turns)
    if n_words < MIN_WORDS:
        return 0.0
    covered = 0
    for words in turns:
        grams = Counter(zip(words, words[1:], words[2:]))
        mask = [False] * len(words)
        for i, g in enumerate(zip(words, words[1:], words[2:])):
            if grams[g] > 1:
                mask[i] = mask[i + 1] = mask[i + 2] = True
        covered += sum(mask)
    return covered / n_words


def _as_spec(spec: QualitySpec | int) -> QualitySpec:
    if isinstance(spec, QualitySpec):
        return spec
    return QualitySpec(min_turns=spec, max_turns=max(spec, QualitySpec().max_turns))


def check(conv: Conversation, spec: QualitySpec | int) -> tuple[str, str] | None:
    """(reason, detail) when the conversation fails the gate, else None.

    An int is read as QualitySpec(min_turns=n) with every other check at its default.
    """
    spec = _as_spec(spec)
    turns = [m for m in conv.messages if m["role"] != "system"]
    roles = [m["role"] for m in turns]
    if len(roles) < spec.min_turns:
        return "too_few_turns", f"{len(roles)} non-system turns, need {spec.min_turns}"
    if len(roles) > spec.max_turns:
        return "too_many_turns", f"{len(roles)} non-system turns, max {spec.max_turns}"
    if "user" not in roles:
        return "no_user_turn", f"{len(roles)} non-system turns, none from the user"
    if "assistant" not in roles:
        return "no_final_assistant_turn", "no assistant turn"
    if roles[-1] != "assistant":
        return "no_final_assistant_turn", f"last turn is '{roles[-1]}'"
    texts = [m["content"] for m in turns if m["role"] in ("user", "assistant")]
    chars = sum(len(m["content"]) for m in turns)
    if chars < spec.min_chars:
        return "too_short", f"{chars} characters, need {spec.min_chars}"
    if chars > spec.max_chars:
        return "too_long", f"{chars} characters, max {spec.max_chars}"
    joined = "\n".join(texts)
    ratio = alpha_ratio(joined)
    if ratio < spec.min_alpha_ratio:
        return "garbage", f"letter ratio {ratio:.2f} below {spec.min_alpha_ratio}"
    mashed = mash_share(joined)
    if mashed > MAX_MASH_SHARE:
        return "garbage", f"keyboard mashing {mashed:.2f} of the letters, above {MAX_MASH_SHARE}"
    lines = duplicate_line_share(texts)
    grams = repeated_trigram_share(texts)
    if max(lines, grams) > spec.max_repetition:
        kind = "repeated lines" if lines >= grams else "repeated 3-grams"
        return "repetitive", f"{kind} {max(lines, grams):.2f} above {spec.max_repetition}"
    said = {" ".join(m["content"].split()).casefold() for m in turns if m["role"] == "user"}
    replies = [" ".join(m["content"].split()).casefold() for m in turns if m["role"] == "assistant"]
    if all(r in said for r in replies):  # test sessions, copy-paste loops: nothing to learn
        return "echo", f"{len(replies)} assistant turns, each repeating a customer turn"
    if spec.languages:
        code, prob = language.detect(joined)
        if not language.accepted(code, spec.languages):
            return "wrong_language", (f"detected '{code}' (p {prob:.2f}), "
                                      f"allowed {','.join(spec.languages)}")
    return None


def gate(records: Iterable[Conversation], spec: QualitySpec | int) -> Iterator[Conversation | Reject]:
    """Pass conversations that satisfy `spec`, turn the others into Rejects (input order kept)."""
    spec = _as_spec(spec)
    for conv in records:
        failed = check(conv, spec)
        if failed is None:
            yield conv
        else:
            yield Reject(source=conv.source, stage=STAGE, reason=failed[0], detail=failed[1],
                         record_id=conv.id)
