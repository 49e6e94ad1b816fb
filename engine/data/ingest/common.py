"""Shared ingest plumbing: record ids, readability checks, JSON lines and JSON documents with line numbers.

Every reader yields Conversation or Reject records in file order. The helpers here turn the raw
file into (line number, decoded value) pairs and turn low-level failures into rejects (one bad line)
or DataErrors (the whole file is unusable), never with customer text in a detail or a message.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from engine.data.html_text import html_to_text, looks_like_html
from engine.errors import DataError
from engine.hashing import sha256_text
from engine.records import Conversation, Reject, SourceRef

STAGE = "ingest"
HEAD_BYTES = 1 << 16

Advance = Callable[[int], None]
MISSING: Any = object()

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def record_id(file: str, line: int | None, source_id: str | None) -> str:
    """Stable, unique record id: the first 16 hex digits of sha256("file:line:source-id")."""
    return sha256_text(f"{file}:{'' if line is None else line}:{source_id or ''}")[:16]


class Bad(NamedTuple):
    """Why a record is unusable: a reason code and a detail naming positions and rules only."""

    reason: str
    detail: str
    sid: str | None = None


@dataclass
class Parsed:
    """A usable record, before it gets its file position."""

    messages: list[dict[str, str]]
    sid: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)


def conversations(file: str, items: Iterable[tuple[int, Any] | Reject],
                  parse: Callable[[Any], Parsed | Bad]) -> Iterator[Conversation | Reject]:
    """Turn (line, decoded record) pairs into Conversations, or Rejects carrying their line."""
    for item in items:
        if isinstance(item, Reject):
            yield item
            continue
        line_no, obj = item
        parsed = parse(obj)
        if isinstance(parsed, Bad):
            yield reject(file, line_no, parsed.reason, parsed.detail, sid=parsed.sid)
            continue
        conv = Conversation(id=record_id(file, line_no, parsed.sid), messages=parsed.messages,
                            source=SourceRef(file, line_no, parsed.sid), meta=parsed.meta)
        if parsed.names:
            conv.hints["names"] = parsed.names
        yield conv


def reject(file: str, line: int | None, reason: str, detail: str = "", *, sid: str | None = None,
           identified: bool = True) -> Reject:
    """A Reject for the record starting at `line`; `identified` records also get its record id."""
    return Reject(source=SourceRef(file, line, sid), stage=STAGE, reason=reason, detail=detail,
                  record_id=record_id(file, line, sid) if identified else None)


# ------------------------------------------------------------------------------ file checks
def read_head(path: str | Path) -> bytes:
    """The first bytes of a file; DataError (naming the file) if it cannot be opened, or is
    UTF-16 or binary."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(HEAD_BYTES)
    except FileNotFoundError:
        raise DataError("input file not found", where=str(path),
                        hint="relative input paths resolve against the config file's folder") from None
    except IsADirectoryError:
        raise DataError("input path is a directory, not a file", where=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot open input file ({exc.__class__.__name__})", where=str(path)) from None
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in head:
        raise DataError("input file is not UTF-8 text (looks like UTF-16 or binary)", where=str(path),
                        hint="re-export the file as UTF-8")
    return head


def check_readable(path: str | Path) -> None:
    """Raise DataError (naming the file) unless it can be opened and is not UTF-16 or binary."""
    read_head(path)


def check_readable_utf8(path: str | Path) -> bytes:
    """Like check_readable, and the first 64 KiB must decode as UTF-8; returns those bytes."""
    head = read_head(path)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise DataError(f"input file is not UTF-8 text (invalid byte at offset {exc.start})",
                        where=str(path), hint="re-export the file as UTF-8") from None
    return head


def check_text_head(path: str | Path) -> bytes:
    """Like check_readable, and at least one of the complete lines in the first 64 KiB must decode
    as UTF-8 (files read line by line reject single undecodable lines instead)."""
    head = read_head(path)
    lines = head.split(b"\n")
    if len(head) == HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut in the middle of a character
    bad = good = 0
    for line in lines:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
        else:
            good += bool(line.strip())
    if bad and not good:
        raise DataError("input file is not UTF-8 text (no line at its start decodes)",
                        where=str(path), hint="re-export the file as UTF-8")
    return head


def first_char(head: bytes) -> str:
    """The first non-whitespace character of a file head (after a UTF-8 BOM), or ''."""
    text = head.removeprefix(codecs.BOM_UTF8).lstrip(b" \t\r\n")
    return chr(text[0]) if text else ""


def check_json_lines_head(path: Path, head: bytes, fmt: str) -> None:
    """A file read line by line whose first line is a lone '{' is a pretty-printed document."""
    text = head.removeprefix(codecs.BOM_UTF8).lstrip(b" \t\r\n")
    first, nl, _ = text.partition(b"\n")
    if nl and first.strip() == b"{":
        raise DataError(f"format '{fmt}' reads one JSON object per line, but the file is one "
                        "pretty-printed JSON document", where=str(path),
                        hint="set 'fields.records' to the dotted path of the list of records "
                             "(e.g. 'data.conversations'), or re-export as JSON Lines")


def count_lines(text: str) -> int:
    """Physical lines the way the pipeline counts them (a last line without '\\n' counts)."""
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


# ------------------------------------------------------------------------------ JSON values
def source_id(value: Any) -> tuple[str | None, str | None]:
    """(id, error): source ids may be strings or integers; blank means none."""
    if value is None or value is MISSING:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, "id is not a string or integer"
    text = str(value).strip()
    return (text or None), None


def get_path(obj: Any, path: str | Sequence[str]) -> Any:
    """The value at a dotted path ('ticket.messages', 'parts.0.body'), or MISSING."""
    keys = path.split(".") if isinstance(path, str) else path
    for key in keys:
        if key == "":
            continue
        if isinstance(obj, dict):
            if key not in obj:
                return MISSING
            obj = obj[key]
        elif isinstance(obj, list) and key.isdigit():
            if int(key) >= len(obj):
                return MISSING
            obj = obj[int(key)]
        else:
            return MISSING
    return obj


def with_metadata(messages: list[dict[str, str]], obj: dict[str, Any], sid: str | None) -> Parsed | Bad:
    """A parsed record with the line's optional `metadata` object, after the unicode check."""
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        return Bad("bad_schema", "'metadata' is not an object", sid)
    if not valid_unicode([messages, meta]):
        return Bad("bad_schema", "invalid unicode (lone surrogate escape)", sid)
    return Parsed(messages, sid, dict(meta))


def valid_unicode(obj: Any) -> bool:
    """False when a string holds a lone surrogate (a '\\ud800' escape) that UTF-8 cannot encode."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError):
        return False
    return True


def body_text(text: str) -> str:
    """An HTML body (chat widget, e-mail) as plain text; other text unchanged."""
    return html_to_text(text) if looks_like_html(text) else text


# ------------------------------------------------------------------------------ JSON Lines
Span = tuple[int, int, int]  # part of a JSON Lines file: first byte, end byte, first line's number
def json_lines(path: Path, file: str, advance: Advance | None, span: Span | None = None
               ) -> Iterator[tuple[int, Any] | Reject]:
    """(line number, decoded value) per non-blank line; a `bad_encoding`/`bad_json` Reject per
    line that is not UTF-8 or not JSON. DataError if the file cannot be read or no line decodes.

    With `span` (first byte, end byte, number of the first line; both bytes at line starts), only
    the lines starting in [first, end), numbered as in the whole file; then whether any line of
    the file decodes is for the caller to judge (`not_utf8`)."""
    check_readable(path)
    decoded = undecodable = 0
    start, end, line_no = span if span is not None else (0, -1, 1)
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        for raw in f:
            if pos == end:
                break
            pos += len(raw)
            if advance is not None:
                advance(1)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                undecodable += 1
                yield reject(file, line_no, "bad_encoding",
                             f"invalid UTF-8 byte at column {exc.start + 1}", identified=False)
                line_no += 1
                continue
            text = text.rstrip("\r\n")
            if line_no == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                line_no += 1
                continue
            decoded += 1
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:  # exc.msg is a fixed parser message, no data
                yield reject(file, line_no, "bad_json", f"{exc.msg} at column {exc.colno}",
                             identified=False)
                line_no += 1
                continue
            except RecursionError:
                yield reject(file, line_no, "bad_json", "nesting too deep", identified=False)
                line_no += 1
                continue
            yield line_no, obj
            line_no += 1
    if span is None and undecodable and not decoded:
        raise not_utf8(path, undecodable)


def not_utf8(path: Path, undecodable: int) -> DataError:
    """A JSON Lines input none of whose lines decode (it has `undecodable` lines)."""
    return DataError(f"input file is not UTF-8 text (none of its {undecodable} lines decode)",
                     where=str(path), hint="re-export the file as UTF-8")


# ------------------------------------------------------------------------------ JSON documents
def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]


def _value_at(text: str, i: int, keys: list[str]) -> int:
    """Offset of the value at `keys` inside the (already validated) JSON value starting at `i`.

    Mirrors json.loads: for a key given twice in one object, the last one wins."""
    for key in keys:
        i = _skip(text, i)
        found = -1
        if text[i] == "{":
            i = _skip(text, i + 1)
            while text[i] != "}":
                name, i = _DECODER.raw_decode(text, i)
                i = _skip(text, _skip(text, i) + 1)  # past ':'
                if name == key:
                    found = i
                _, i = _DECODER.raw_decode(text, i)
                i = _skip(text, i)
                if text[i] == ",":
                    i = _skip(text, i + 1)
        else:  # '[' with a numeric key
            i, n = _skip(text, i + 1), 0
            while text[i] != "]":
                if n == int(key):
                    found = i
                _, i = _DECODER.raw_decode(text, i)
                i, n = _skip(text, i), n + 1
                if text[i] == ",":
                    i = _skip(text, i + 1)
        i = found
    return i


def json_document(path: Path, records: str | None, advance: Advance | None,
                  fmt: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) for every element of the list at dotted path `records` ('' or None:
    the top-level array) of a file holding one JSON document. The document is read whole; a file
    that is not valid JSON, or has no list at that path, is a DataError naming file, line and field."""
    check_readable_utf8(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # keep '\r\n': offsets → lines
            text = f.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"input file is not UTF-8 text (invalid byte at offset {exc.start})",
                        where=str(path), hint="re-export the file as UTF-8") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"input file is not valid JSON ({exc.msg})",
                        where=f"{path}:{exc.lineno}:{exc.colno}",
                        hint=f"format '{fmt}' reads one JSON document here; JSON Lines need "
                             "'fields.records' unset and a file that does not start with '['") from None
    except RecursionError:
        raise DataError("input file is not valid JSON (nesting too deep)", where=str(path)) from None
    keys = [k for k in (records or "").split(".") if k]
    target = get_path(doc, keys)
    del doc
    if not isinstance(target, list):
        what = "not found" if target is MISSING else "not a list"
        shown = f"fields.records '{records}'" if keys else "the top-level value"
        raise DataError(f"{shown} is {what} in the document", where=str(path),
                        hint="'fields.records' is the dotted path to the list of records")
    n = len(target)
    del target
    i = _value_at(text, 0, keys)
    i, line, last = _skip(text, i + 1), 1, 0
    for _ in range(n):
        line += text.count("\n", last, i)
        last = i
        value, i = _DECODER.raw_decode(text, i)
        yield line, value
        i = _skip(text, i)
        if text[i] == ",":
            i = _skip(text, i + 1)
    if advance is not None:
        advance(count_lines(text))


def is_json_document(path: Path, records: str | None) -> bool:
    """Whether a JSON input is one document (`records` set, or it starts with '['), not lines."""
    return bool(records) or first_char(read_head(path)) == "["


def json_records(path: Path, file: str, records: str | None, advance: Advance | None,
                 fmt: str, span: Span | None = None) -> Iterator[tuple[int, Any] | Reject]:
    """JSON Lines, or one JSON document when `records` is set or the file starts with '['
    (a document is read whole: no `span`)."""
    if is_json_document(path, records):
        if span is not None:
            raise ValueError(f"{path}: a JSON document cannot be read by byte ranges")
        yield from json_document(path, records, advance, fmt)
    else:
        yield from json_lines(path, file, advance, span)
