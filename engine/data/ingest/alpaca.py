"""Ingest Alpaca records ({"instruction", "input", "output", "system"?, "history"?}) into Conversations.

One record per line (JSON Lines), or one JSON array of records (a file starting with '[', as the
original alpaca_data.json, or `fields.records` naming the list inside a document). Messages:
`system` (if any), then one user/assistant pair per `history` entry ([[question, answer], …]),
then the user turn — `instruction`, followed by a blank line and `input` when that is not empty —
and the assistant turn `output`. `id` is the source id; a `metadata` object is copied into meta.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.config import InputSpec
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
from engine.records import Conversation, Reject


def _optional_str(obj: dict[str, Any], key: str) -> str | None | Bad:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    return Bad("bad_schema", f"'{key}' is not a string")


def parse_alpaca(obj: Any) -> Parsed | Bad:
    """Validate one Alpaca record (rules in the module docstring)."""
    if not isinstance(obj, dict):
        return Bad("bad_schema", "record is not a JSON object")
    sid, err = source_id(obj.get("id"))
    if err:
        return Bad("bad_schema", err)
    fields: dict[str, str | None] = {}
    for key in ("instruction", "input", "output", "system"):
        value = _optional_str(obj, key)
        if isinstance(value, Bad):
            return value._replace(sid=sid)
        fields[key] = value
    if not fields["instruction"] or not fields["instruction"].strip():
        return Bad("bad_schema", "no 'instruction' text", sid)
    if fields["output"] is None:
        return Bad("bad_schema", "no 'output' string", sid)
    messages: list[dict[str, str]] = []
    if fields["system"] and fields["system"].strip():
        messages.append({"role": "system", "content": fields["system"]})
    history = obj.get("history") or []
    if not isinstance(history, list):
        return Bad("bad_schema", "'history' is not a list", sid)
    for i, pair in enumerate(history, start=1):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(x, str) for x in pair)):
            return Bad("bad_schema", f"history entry {i} is not a [question, answer] pair", sid)
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    prompt = fields["instruction"]
    if fields["input"] and fields["input"].strip():
        prompt += "\n\n" + fields["input"]
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": fields["output"]}]
    return with_metadata(messages, obj, sid)


def read_alpaca(path: str | Path, spec: InputSpec, *, label: str | None = None,
                advance: Advance | None = None, span: Span | None = None
                ) -> Iterator[Conversation | Reject]:
    """Yield a Conversation per usable record and a Reject per unusable one, in file order
    (JSON Lines: those of `span` only, when given)."""
    p = Path(path)
    file = label or p.name
    records = spec.fields.records if spec.fields else None
    yield from conversations(file, json_records(p, file, records, advance, "alpaca", span), parse_alpaca)
