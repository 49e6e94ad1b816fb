"""Ingest plain-text chat/call transcripts (.txt, many conversations per file) into Conversations.

Conversations are separated by a line of three or more '-', '=', '*', '_', '~' or '#', or start
at a header line such as "Conversation 123", "Chat #123", "Ticket: T-4471" or
"### Case 88 - 2026-03-01" (a word from conversation/chat/ticket/transcript/case/session/call and an
id with a digit; the id becomes the source id). Inside a conversation, turns are "Speaker: text"
lines, optionally after a timestamp ("[10:32]", "10:32:05", "2026-03-01 10:32"); lines without a
speaker continue the previous turn (engine.data.ingest.speakers.parse_turns has the exact rules,
unknown speakers included). Turns are kept as they are: merging, signatures and quoted text are the
turns stage's work. A path that is a directory reads every *.txt in it, in sorted name order; each
file is recorded as "<input label>/<file name>".

Rejects, each with the conversation's first line: `empty_transcript` (no turn with a known
speaker), `unknown_speaker`, `bad_encoding` (a line of the conversation is not UTF-8). A file that
cannot be read, or none of whose lines decode as UTF-8, is a DataError.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import InputSpec
from engine.data.ingest.common import Advance, check_readable, record_id, reject
from engine.data.ingest.speakers import parse_turns
from engine.errors import DataError
from engine.records import Conversation, Reject, SourceRef

_SEPARATOR = re.compile(r"^\s*(?:-{3,}|={3,}|\*{3,}|_{3,}|~{3,}|#{3,})\s*$")
_HEADER = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:conversation|chat|ticket|transcript|case|session|call)"
    r"\s*(?:#|no\.?|id|number)?\s*[:#]?\s*(?P<id>(?=[\w./-]*\d)[A-Za-z0-9][\w./-]{0,63})"
    r"\s*(?:[-–—|(,].*)?$", re.I)


def transcript_files(path: Path) -> list[Path]:
    """The files an input path stands for: itself, or the *.txt files of a directory (sorted)."""
    if not path.is_dir():
        return [path]
    files = sorted(f for f in path.iterdir() if f.suffix.lower() == ".txt" and f.is_file())
    if not files:
        raise DataError("the input directory has no *.txt files", where=str(path),
                        hint="format 'transcript' reads a .txt file or a directory of them")
    return files


@dataclass
class _Block:
    start: int | None = None
    sid: str | None = None
    lines: list[tuple[int, str]] = field(default_factory=list)
    bad_line: int | None = None


def _finish(block: _Block, file: str, spec: InputSpec) -> Iterator[Conversation | Reject]:
    if block.start is None:
        return  # only blank lines between separators
    line, sid = block.start, block.sid
    if block.bad_line is not None:
        yield reject(file, line, "bad_encoding", f"line {block.bad_line}: invalid UTF-8", sid=sid)
        return
    parsed = parse_turns(block.lines, spec.speakers)
    if parsed.unknown_line is not None:
        yield reject(file, line, "unknown_speaker",
                     f"line {parsed.unknown_line}: speaker not in 'speakers'", sid=sid)
        return
    if not parsed.turns:
        yield reject(file, line, "empty_transcript", "no turn with a known speaker", sid=sid)
        return
    conv = Conversation(id=record_id(file, line, sid),
                        messages=[{"role": t.role, "content": t.text} for t in parsed.turns],
                        source=SourceRef(file, line, sid))
    if parsed.names:
        conv.hints["names"] = parsed.names
    yield conv


def _read_file(path: Path, file: str, spec: InputSpec,
               advance: Advance | None) -> Iterator[Conversation | Reject]:
    check_readable(path)
    block = _Block()
    decoded = undecodable = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if advance is not None:
                advance(1)
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                undecodable += 1
                block.start = block.start or line_no
                block.bad_line = block.bad_line or line_no
                continue
            if line_no == 1:
                text = text.removeprefix("\ufeff")
            decoded += bool(text.strip())
            if _SEPARATOR.match(text):
                yield from _finish(block, file, spec)
                block = _Block()
                continue
            header = _HEADER.match(text)
            if header:
                yield from _finish(block, file, spec)
                block = _Block(start=line_no, sid=header.group("id"))
                continue
            if block.start is None and text.strip():
                block.start = line_no
            if block.start is not None:
                block.lines.append((line_no, text))
    yield from _finish(block, file, spec)
    if undecodable and not decoded:
        raise DataError(f"input file is not UTF-8 text (none of its {undecodable} lines decode)",
                        where=str(path), hint="re-export the file as UTF-8")


def read_transcript(path: str | Path, spec: InputSpec, *, label: str | None = None,
                    advance: Advance | None = None) -> Iterator[Conversation | Reject]:
    """Yield a Conversation per usable conversation and a Reject per unusable one, in file order."""
    p = Path(path)
    base = label or p.name
    if not p.is_dir():
        yield from _read_file(p, base, spec, advance)
        return
    for f in transcript_files(p):
        yield from _read_file(f, f"{base}/{f.name}", spec, advance)
