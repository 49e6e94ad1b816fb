"""Word-level diff of two model outputs (base → tuned), rendered as escaped HTML with <del>/<ins>.

Words and punctuation runs (each carrying the whitespace before it) are aligned with
difflib.SequenceMatcher (no autojunk heuristic; on very repetitive text the part between the
common prefix and suffix is one change, see MAX_KEY_PAIRS). The result is then tidied up the
way a reader expects: a space or punctuation left "equal" between two changes (no word in it)
joins the change, so a changed phrase is one deleted and one inserted span, not word-by-word
confetti; and whitespace that both sides of a change share at its edges moves out of it. Joining
the segments of one side gives back that side's text exactly: nothing is normalised away.

  word_diff       (base, tuned) → [(op, text)], op in "equal" / "delete" / "insert"
  render_inline   one HTML fragment: equal text, <del>base only</del>, <ins>tuned only</ins>
  render_sides    two HTML fragments: the base text with its <del> spans, the tuned text with <ins>
Every fragment is escaped here (markupsafe), so customer text can never become markup.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Literal

from markupsafe import Markup, escape

Op = Literal["equal", "delete", "insert"]
KEY_RE = re.compile(r"\w+|[^\w\s]+")
WORD_RE = re.compile(r"\w")
# difflib slows down sharply on repetitive text (a model stuck in a loop: "the router the router
# …"): it scans every pair of equal keys, again for each block it finds. Between the common prefix
# and suffix, when one key pairs up more than MAX_KEY_PAIRS times (count in base × count in tuned)
# or all keys more than MAX_PAIRS times, that part is shown as one change. Ordinary answers of
# up to 4,000 characters stay far below both (a 700-word English text: ≈ 1,500 and ≈ 36,000).
MAX_KEY_PAIRS = 2_500
MAX_PAIRS = 100_000


def _keyed(text: str) -> tuple[list[str], list[str]]:
    """(keys, pieces): each word or punctuation run is a key; its piece is the key with the
    whitespace before it. Trailing whitespace is one more piece with the key ''. The pieces joined
    give back the text."""
    keys: list[str] = []
    pieces: list[str] = []
    pos = 0
    for m in KEY_RE.finditer(text):
        keys.append(m.group())
        pieces.append(text[pos:m.end()])
        pos = m.end()
    if pos < len(text):
        keys.append("")
        pieces.append(text[pos:])
    return keys, pieces


def _opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """difflib opcodes of a → b, computed on what lies between the common prefix and suffix."""
    n, m = len(a), len(b)
    pre = 0
    while pre < min(n, m) and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < min(n, m) - pre and a[n - 1 - suf] == b[m - 1 - suf]:
        suf += 1
    mid_a, mid_b = a[pre:n - suf], b[pre:m - suf]
    ops: list[tuple[str, int, int, int, int]] = [("equal", 0, pre, 0, pre)] if pre else []
    count_b = Counter(mid_b)
    pairs = [c * count_b[k] for k, c in Counter(mid_a).items() if k in count_b]
    if pairs and (max(pairs) > MAX_KEY_PAIRS or sum(pairs) > MAX_PAIRS):
        ops.append(("replace", pre, n - suf, pre, m - suf))
    elif mid_a or mid_b:
        ops += [(tag, i1 + pre, i2 + pre, j1 + pre, j2 + pre) for tag, i1, i2, j1, j2
                in difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False).get_opcodes()]
    if suf:
        ops.append(("equal", n - suf, n, m - suf, m))
    return ops


def _edge_space(x: str, y: str, end: bool) -> str:
    """The whitespace both x and y start (or end) with."""
    pick = (lambda t: t[len(t.rstrip()):]) if end else (lambda t: t[:len(t) - len(t.lstrip())])
    wx, wy = pick(x), pick(y)
    n = 0
    while n < min(len(wx), len(wy)) and (wx[-1 - n] == wy[-1 - n] if end else wx[n] == wy[n]):
        n += 1
    return (wx[len(wx) - n:] if end else wx[:n]) if n else ""


def word_diff(base: str, tuned: str) -> list[tuple[Op, str]]:
    """Segments that turn `base` into `tuned`: the equal + delete texts joined give base exactly,
    the equal + insert texts give tuned exactly. Within a change the delete comes first; no two
    neighbouring segments have the same op. Words and punctuation are compared; a difference in
    whitespace alone shows as a changed run of whitespace."""
    if base == tuned:
        return [("equal", base)] if base else []
    ka, pa = _keyed(base)
    kb, pb = _keyed(tuned)
    # runs: ("equal", text, text) or ("change", base text, tuned text), neighbours of one kind merged
    runs: list[tuple[str, str, str]] = []

    def run(kind: str, x: str, y: str) -> None:
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + x, runs[-1][2] + y)
        else:
            runs.append((kind, x, y))

    for tag, i1, i2, j1, j2 in _opcodes(ka, kb):
        if tag != "equal":
            run("change", "".join(pa[i1:i2]), "".join(pb[j1:j2]))
            continue
        for key, x, y in zip(ka[i1:i2], pa[i1:i2], pb[j1:j2]):
            if x == y:
                run("equal", x, y)
            else:  # same word, other whitespace before it
                run("change", x[:len(x) - len(key)], y[:len(y) - len(key)])
                run("equal", key, key)
    merged: list[tuple[str, str, str]] = []
    for k, (kind, x, y) in enumerate(runs):
        between = 0 < k < len(runs) - 1  # runs alternate, so both neighbours are changes
        if kind == "equal" and between and not WORD_RE.search(x):
            kind = "change"  # no word between two changes: one change
        if merged and merged[-1][0] == kind == "change":
            merged[-1] = ("change", merged[-1][1] + x, merged[-1][2] + y)
        else:
            merged.append((kind, x, y))
    out: list[tuple[Op, str]] = []

    def add(op: Op, text: str) -> None:
        if text:
            if out and out[-1][0] == op:
                out[-1] = (op, out[-1][1] + text)
            else:
                out.append((op, text))

    for kind, x, y in merged:
        if kind == "equal":
            add("equal", x)
            continue
        lead = _edge_space(x, y, end=False)
        x, y = x[len(lead):], y[len(lead):]
        tail = _edge_space(x, y, end=True)
        x, y = x[:len(x) - len(tail)], y[:len(y) - len(tail)]
        add("equal", lead)
        add("delete", x)
        add("insert", y)
        add("equal", tail)
    return out


def render_inline(segments: list[tuple[Op, str]]) -> Markup:
    """One fragment: unchanged text, <del>removed</del>, <ins>added</ins> — all escaped."""
    parts = []
    for op, text in segments:
        if op == "equal":
            parts.append(escape(text))
        else:
            tag = "del" if op == "delete" else "ins"
            parts.append(Markup(f"<{tag}>{escape(text)}</{tag}>"))
    return Markup("").join(parts)


def render_sides(base: str, tuned: str) -> tuple[Markup, Markup]:
    """The base text with what the tuned output dropped in <del>, and the tuned text with what it
    added in <ins>: the side-by-side view of word_diff."""
    segments = word_diff(base, tuned)
    return (render_inline([s for s in segments if s[0] != "insert"]),
            render_inline([s for s in segments if s[0] != "delete"]))
