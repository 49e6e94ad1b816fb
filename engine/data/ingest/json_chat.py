"""Ingest nested chat-widget JSON exports into Conversations, selected with `fields` (dotted paths).

`fields` (engine.config.FieldMap) says where things are; a path is keys joined by dots, a number
indexes a list ("parts.0.body"):
  records        the list of conversations when the file is one JSON document; unset: one
                 conversation per line (JSON Lines), or a file that is one top-level array
  id             source id of a conversation (string or integer)
  turns          the list of turns of a conversation           (default "messages")
  speaker        the speaker label of a turn, through `speakers` (default "author")
  text           the text of a turn (a string, a list of strings, or null = empty) (default "text")
  meta           values copied into Conversation.meta, keyed by their last path segment
  customer_name  the customer's name: looked up on the conversation, else on every customer
                 turn; goes to Conversation.hints["names"] for the PII stage (never written out)
A configured path missing from a record rejects that record (`missing_field`, naming the path);
a wrong type is `bad_schema`; an unknown speaker is `unknown_speaker` (with the turn number).
HTML bodies (engine.data.html_text.looks_like_html) become plain text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.config import FieldMap, InputSpec, SpeakerMap
from engine.data.ingest.common import (
    MISSING,
    Advance,
    Bad,
    Parsed,
    Span,
    body_text,
    conversations,
    get_path,
    json_records,
    source_id,
    valid_unicode,
)
from engine.data.ingest.speakers import role_for
from engine.records import Conversation, Reject


def meta_keys(paths: list[str]) -> dict[str, str]:
    """path → meta key: the last segment, or the whole path where two last segments collide."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (k if last.count(k) == 1 else p) for p, k in zip(paths, last)}


def _text(value: Any) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str):
        return body_text(value)
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return body_text("\n".join(value))
    return None


def _name(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and "@" not in value:
        return " ".join(value.split())
    return None


def parse_chat(obj: Any, fields: FieldMap, speakers: SpeakerMap) -> Parsed | Bad:
    """Validate one conversation object (rules in the module docstring)."""
    if not isinstance(obj, dict):
        return Bad("bad_schema", "record is not a JSON object")
    sid = None
    if fields.id:
        value = get_path(obj, fields.id)
        if value is MISSING:
            return Bad("missing_field", f"fields.id '{fields.id}' not found")
        sid, err = source_id(value)
        if err:
            return Bad("bad_schema", f"fields.id '{fields.id}': {err}")
    turns = get_path(obj, fields.turns)
    if turns is MISSING:
        return Bad("missing_field", f"fields.turns '{fields.turns}' not found", sid)
    if not isinstance(turns, list) or not turns:
        return Bad("bad_schema", f"fields.turns '{fields.turns}' is not a non-empty list", sid)
    messages: list[dict[str, str]] = []
    names: list[str] = []
    for i, turn in enumerate(turns, start=1):
        speaker = get_path(turn, fields.speaker)
        if speaker is MISSING:
            return Bad("missing_field", f"turn {i}: fields.speaker '{fields.speaker}' not found", sid)
        if isinstance(speaker, bool) or not isinstance(speaker, (str, int)):
            return Bad("bad_schema", f"turn {i}: fields.speaker '{fields.speaker}' is not a string", sid)
        role = role_for(str(speaker), speakers)
        if role is None:
            return Bad("unknown_speaker", f"turn {i}: speaker not in 'speakers'", sid)
        value = get_path(turn, fields.text)
        if value is MISSING:
            return Bad("missing_field", f"turn {i}: fields.text '{fields.text}' not found", sid)
        text = _text(value)
        if text is None:
            return Bad("bad_schema", f"turn {i}: fields.text '{fields.text}' is not text", sid)
        messages.append({"role": role, "content": text})
        if fields.customer_name and role == "user":
            name = _name(get_path(turn, fields.customer_name))
            if name and name not in names:
                names.append(name)
    if fields.customer_name:
        name = _name(get_path(obj, fields.customer_name))
        if name:
            names = [name, *(n for n in names if n != name)]
    meta: dict[str, Any] = {}
    for path, key in meta_keys(fields.meta).items():
        value = get_path(obj, path)
        if value is MISSING:
            return Bad("missing_field", f"fields.meta '{path}' not found", sid)
        meta[key] = value
    if not valid_unicode([messages, meta, names]):
        return Bad("bad_schema", "invalid unicode (lone surrogate escape)", sid)
    return Parsed(messages, sid, meta, names)


def read_json_chat(path: str | Path, spec: InputSpec, *, label: str | None = None,
                   advance: Advance | None = None, span: Span | None = None
                   ) -> Iterator[Conversation | Reject]:
    """Yield a Conversation per usable conversation and a Reject per unusable one, in file order
    (JSON Lines: those of `span` only, when given)."""
    p = Path(path)
    file = label or p.name
    fields = spec.fields or FieldMap()
    items = json_records(p, file, fields.records, advance, "json_chat", span)
    yield from conversations(file, items, lambda obj: parse_chat(obj, fields, spec.speakers))
