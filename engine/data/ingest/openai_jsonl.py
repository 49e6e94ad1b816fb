"""Ingest OpenAI chat JSONL (one {"messages": [...], "id"?, "metadata"?} per line) into Conversations.

Streaming, one line at a time. A line that is not JSON becomes a `bad_json` reject, a line with the
wrong shape a `bad_schema` reject, a line that is not UTF-8 a `bad_encoding` reject — always with
its 1-based line number and never with the line's text. Blank lines are skipped. A file that cannot
be opened, is UTF-16 or binary, or has no line that decodes as UTF-8 is a `DataError` naming it.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.errors import DataError
from engine.hashing import sha256_text
from engine.records import ROLES, Conversation, Reject, SourceRef

STAGE = "ingest"
_HEAD_BYTES = 1 << 16

Advance = Callable[[int], None]


def record_id(file: str, line: int | None, source_id: str | None) -> str:
    """Stable, unique record id: the first 16 hex digits of sha256("file:line:source-id")."""
    return sha256_text(f"{file}:{'' if line is None else line}:{source_id or ''}")[:16]


def _read_head(path: str | Path) -> bytes:
    """The first bytes of a file; DataError (naming the file) if it cannot be opened, or is
    UTF-16 or binary."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(_HEAD_BYTES)
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
    _read_head(path)


def check_readable_utf8(path: str | Path) -> None:
    """Like check_readable, and the first 64 KiB must decode as UTF-8."""
    head = _read_head(path)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise DataError(f"input file is not UTF-8 text (invalid byte at offset {exc.start})",
                        where=str(path), hint="re-export the file as UTF-8") from None


def _source_id(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """(id, error): ids may be strings or integers."""
    value = obj.get("id")
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, "id is not a string or integer"
    text = str(value).strip()
    return (text or None), None


def parse_record(obj: Any) -> tuple[list[dict[str, str]], str | None, dict[str, Any]] | str:
    """Validate one decoded JSON object: (messages, source id, meta), or an error detail string.

    The detail names positions and rules only, never the offending values.
    """
    if not isinstance(obj, dict):
        return "line is not a JSON object"
    sid, err = _source_id(obj)
    if err:
        return err
    messages = obj.get("messages")
    if not isinstance(messages, list):
        return "no 'messages' list"
    if not messages:
        return "'messages' is empty"
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict):
            return f"message {i} is not an object"
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            return f"message {i}: unknown role (expected one of {', '.join(ROLES)})"
        content = msg.get("content")
        if not isinstance(content, str):
            return f"message {i}: content is not a string"
        out.append({"role": role, "content": content})
    meta = obj.get("metadata", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        return "'metadata' is not an object"
    try:  # lone surrogates from \ud800-style escapes cannot be written back out as UTF-8
        json.dumps([out, meta], ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError):
        return "invalid unicode (lone surrogate escape)"
    return out, sid, dict(meta)


def read_openai_jsonl(path: str | Path, *, label: str | None = None,
                      advance: Advance | None = None) -> Iterator[Conversation | Reject]:
    """Yield a Conversation per good line and a Reject per bad line, in file order.

    `label` is the file name recorded in SourceRef (default: the file's name); `advance(n)` is
    called with the number of physical lines consumed, for progress bars.
    """
    p = Path(path)
    file = label or p.name
    check_readable(p)
    decoded = undecodable = 0
    with open(p, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if advance is not None:
                advance(1)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                undecodable += 1
                yield Reject(source=SourceRef(file, line_no), stage=STAGE, reason="bad_encoding",
                             detail=f"invalid UTF-8 byte at column {exc.start + 1}")
                continue
            text = text.rstrip("\r\n")
            if line_no == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                continue
            decoded += 1
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:  # exc.msg is a fixed parser message, no data
                yield Reject(source=SourceRef(file, line_no), stage=STAGE, reason="bad_json",
                             detail=f"{exc.msg} at column {exc.colno}")
                continue
            except RecursionError:
                yield Reject(source=SourceRef(file, line_no), stage=STAGE, reason="bad_json",
                             detail="nesting too deep")
                continue
            parsed = parse_record(obj)
            if isinstance(parsed, str):
                sid = _source_id(obj)[0] if isinstance(obj, dict) else None
                src = SourceRef(file, line_no, sid)
                yield Reject(source=src, stage=STAGE, reason="bad_schema", detail=parsed,
                             record_id=record_id(file, line_no, sid))
                continue
            messages, sid, meta = parsed
            yield Conversation(id=record_id(file, line_no, sid), messages=messages,
                               source=SourceRef(file, line_no, sid), meta=meta)
    if undecodable and not decoded:
        raise DataError(f"input file is not UTF-8 text (none of its {undecodable} lines decode)",
                        where=str(path), hint="re-export the file as UTF-8")
