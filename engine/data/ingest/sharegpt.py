"""Ingest ShareGPT records ({"conversations": [{"from": "human", "value": …}, …]}) into Conversations.

One record per line (JSON Lines), or one JSON array of records (a file starting with '[', or
`fields.records` naming the list inside a document). The turn list is `conversations` or
`messages`; each turn is {"from", "value"} or {"role", "content"}. Speakers: human/user → user,
gpt/assistant/model/chatgpt/bard/bing → assistant, system → system, tool/function/function_call/
observation/ipython → tool; anything else goes through the input's `speakers` map, and an unknown one
rejects the record (`unknown_speaker`, with the turn number). A top-level `system` string becomes
the first message; `id` is the source id and a `metadata` object is copied into meta.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.config import InputSpec, SpeakerMap
from engine.data.ingest.common import (
    Advance,
    Bad,
    Parsed,
    Span,
    conversations,
    json_records,
    source_id,
    with_metadata,
)
from engine.data.ingest.openai_jsonl import map_role
from engine.records import Conversation, Reject

FIXED_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant",
    "system": "system",
    "tool": "tool", "function": "tool", "function_call": "tool", "observation": "tool",
    "function_response": "tool", "ipython": "tool",
}


def _turn(turn: Any, i: int, speakers: SpeakerMap) -> dict[str, str] | Bad:
    if not isinstance(turn, dict):
        return Bad("bad_schema", f"turn {i} is not an object")
    label = turn.get("from", turn.get("role"))
    if not isinstance(label, str):
        return Bad("bad_schema", f"turn {i}: no 'from' (or 'role') string")
    role = map_role(label, speakers, FIXED_ROLES)
    if role is None:
        return Bad("unknown_speaker", f"turn {i}: speaker not in 'speakers'")
    text = turn.get("value", turn.get("content"))
    if not isinstance(text, str):
        return Bad("bad_schema", f"turn {i}: no 'value' (or 'content') string")
    return {"role": role, "content": text}


def parse_sharegpt(obj: Any, speakers: SpeakerMap) -> Parsed | Bad:
    """Validate one ShareGPT record (rules in the module docstring)."""
    if not isinstance(obj, dict):
        return Bad("bad_schema", "record is not a JSON object")
    sid, err = source_id(obj.get("id"))
    if err:
        return Bad("bad_schema", err)
    turns = obj.get("conversations", obj.get("messages"))
    if not isinstance(turns, list):
        return Bad("bad_schema", "no 'conversations' (or 'messages') list", sid)
    if not turns:
        return Bad("bad_schema", "'conversations' is empty", sid)
    messages: list[dict[str, str]] = []
    system = obj.get("system")
    if system is not None:
        if not isinstance(system, str):
            return Bad("bad_schema", "'system' is not a string", sid)
        if system.strip():
            messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns, start=1):
        msg = _turn(turn, i, speakers)
        if isinstance(msg, Bad):
            return msg._replace(sid=sid)
        messages.append(msg)
    return with_metadata(messages, obj, sid)


def read_sharegpt(path: str | Path, spec: InputSpec, *, label: str | None = None,
                  advance: Advance | None = None, span: Span | None = None
                  ) -> Iterator[Conversation | Reject]:
    """Yield a Conversation per usable record and a Reject per unusable one, in file order
    (JSON Lines: those of `span` only, when given)."""
    p = Path(path)
    file = label or p.name
    records = spec.fields.records if spec.fields else None
    items = json_records(p, file, records, advance, "sharegpt", span)
    yield from conversations(file, items, lambda obj: parse_sharegpt(obj, spec.speakers))
