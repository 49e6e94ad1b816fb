"""Ingest OpenAI chat JSONL (one {"messages": [...], "id"?, "metadata"?} per line) into Conversations.

Streaming, one line at a time. A line that is not JSON becomes a `bad_json` reject, a line with the
wrong shape a `bad_schema` reject, a line that is not UTF-8 a `bad_encoding` reject, a message
whose role is not known an `unknown_speaker` reject — always with its 1-based line number and never
with the line's text. Roles: system, user and assistant are kept; "developer" is a system message;
"tool", "function" and "ipython" messages come through as role "tool" (the turns stage drops or
keeps them); any other role is looked up in the input's `speakers` map. Blank lines are skipped.
A file that cannot be opened, is UTF-16 or binary, or has no line that decodes as UTF-8 is a
`DataError` naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.config import SpeakerMap
from engine.data.ingest.common import (  # noqa: F401  (re-exported: older import paths)
    Advance,
    Bad,
    Span,
    check_readable,
    check_readable_utf8,
    json_lines,
    record_id,
    reject,
    source_id,
    valid_unicode,
)
from engine.data.ingest.speakers import role_for
from engine.records import Conversation, Reject, SourceRef

STAGE = "ingest"
FIXED_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
               "tool": "tool", "function": "tool", "ipython": "tool"}


def map_role(label: str, speakers: SpeakerMap | None, fixed: dict[str, str]) -> str | None:
    role = fixed.get(label.strip().casefold())
    if role is None and speakers is not None:
        role = role_for(label, speakers)
    return role


def parse_record(obj: Any, speakers: SpeakerMap | None = None
                 ) -> tuple[list[dict[str, str]], str | None, dict[str, Any]] | Bad:
    """Validate one decoded JSON object: (messages, source id, meta), or why it is unusable."""
    if not isinstance(obj, dict):
        return Bad("bad_schema", "line is not a JSON object")
    sid, err = source_id(obj.get("id"))
    if err:
        return Bad("bad_schema", err)
    messages = obj.get("messages")
    if not isinstance(messages, list):
        return Bad("bad_schema", "no 'messages' list")
    if not messages:
        return Bad("bad_schema", "'messages' is empty")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict):
            return Bad("bad_schema", f"message {i} is not an object")
        label = msg.get("role")
        if not isinstance(label, str):
            return Bad("bad_schema", f"message {i}: role is not a string")
        role = map_role(label, speakers, FIXED_ROLES)
        if role is None:
            return Bad("unknown_speaker", f"message {i}: unknown role (not system, user, assistant, "
                       "tool or a label in 'speakers')")
        content = msg.get("content")
        if not isinstance(content, str):
            return Bad("bad_schema", f"message {i}: content is not a string")
        out.append({"role": role, "content": content})
    meta = obj.get("metadata", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        return Bad("bad_schema", "'metadata' is not an object")
    if not valid_unicode([out, meta]):
        return Bad("bad_schema", "invalid unicode (lone surrogate escape)")
    return out, sid, dict(meta)


def read_openai_jsonl(path: str | Path, *, label: str | None = None, advance: Advance | None = None,
                      speakers: SpeakerMap | None = None, span: Span | None = None
                      ) -> Iterator[Conversation | Reject]:
    """Yield a Conversation per good line and a Reject per bad line, in file order.

    `label` is the file name recorded in SourceRef (default: the file's name); `advance(n)` is
    called with the number of physical lines consumed, for progress bars; with `span` only
    the lines of that part of the file are read (common.json_lines).
    """
    p = Path(path)
    file = label or p.name
    for item in json_lines(p, file, advance, span):
        if isinstance(item, Reject):
            yield item
            continue
        line_no, obj = item
        parsed = parse_record(obj, speakers)
        if isinstance(parsed, Bad):
            sid = source_id(obj.get("id"))[0] if isinstance(obj, dict) else None
            yield reject(file, line_no, parsed.reason, parsed.detail, sid=sid)
            continue
        messages, sid, meta = parsed
        yield Conversation(id=record_id(file, line_no, sid), messages=messages,
                           source=SourceRef(file, line_no, sid), meta=meta)
