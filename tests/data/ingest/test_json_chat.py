"""json_chat ingest: nested chat-widget exports selected with dotted `fields` paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import FieldMap, InputSpec
from engine.data.ingest import check_input, read_input
from engine.data.ingest.common import record_id
from engine.data.ingest.json_chat import meta_keys
from engine.errors import DataError
from engine.records import Conversation, Reject

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
WIDGET = InputSpec(path="chat_widget.jsonl", format="json_chat", fields=FieldMap(
    id="conversation.id", turns="parts", speaker="author.type", text="body",
    meta=["conversation.channel", "conversation.product"], customer_name="conversation.visitor.name"))
EXPORT = InputSpec(path="chat_export.json", format="json_chat", fields=FieldMap(
    records="export.conversations", id="ticket.ref", turns="entries", speaker="from", text="html"))


def _read(path: Path, spec: InputSpec, seen: list[int] | None = None
          ) -> tuple[list[Conversation], list[Reject]]:
    items = list(read_input(path, spec, label=path.name,
                            advance=seen.append if seen is not None else None))
    return ([x for x in items if isinstance(x, Conversation)], [x for x in items if isinstance(x, Reject)])


def test_widget_jsonl_paths_html_meta_and_names() -> None:
    convs, rejects = _read(FIXTURES / "chat_widget.jsonl", WIDGET)
    assert [(c.source.line, c.source.id) for c in convs] == [(1, "CW-9001"), (2, "CW-9002"), (7, "9007")]
    first = convs[0]
    assert first.id == record_id("chat_widget.jsonl", 1, "CW-9001")
    assert first.messages == [
        {"role": "user", "content": "Hi, my doorbell chime stopped ringing."},   # <p>/<b> stripped
        {"role": "bot", "content": "Thanks! An agent will join shortly."},
        {"role": "assistant", "content": "Hi Ana,\nplease check the chime batteries & the fuse."},
        {"role": "user", "content": "New batteries in.\nIt rings again!"},       # list of strings
        {"role": "assistant", "content": ""},                                   # null body: empty turn
    ]
    assert first.meta == {"channel": "web", "product": "doorbell"}
    assert first.hints == {"names": ["Ana Ruiz"]}
    assert "names" not in first.to_dict() and "Ana" not in json.dumps(first.to_dict()["meta"])
    assert convs[1].messages[0]["role"] == "user"  # "end-user" ends with a user label
    assert convs[1].hints == {}                    # no visitor object: no name
    assert convs[2].hints == {"names": ["Kim Lee"]}
    assert [(r.source.line, r.source.id, r.reason, r.detail) for r in rejects] == [
        (3, "CW-9003", "missing_field", "fields.turns 'parts' not found"),
        (4, "CW-9004", "unknown_speaker", "turn 2: speaker not in 'speakers'"),
        (5, None, "bad_json", "Expecting ',' delimiter at column 34"),
        (6, "CW-9006", "missing_field", "turn 1: fields.text 'body' not found"),
    ]


def test_customer_name_found_on_customer_turns() -> None:
    spec = WIDGET.model_copy(update={"fields": WIDGET.fields.model_copy(
        update={"customer_name": "author.name"})})
    convs, _ = _read(FIXTURES / "chat_widget.jsonl", spec)
    assert convs[0].hints == {"names": ["Ana Ruiz"]}   # the agent's name is not a customer name
    assert convs[1].hints == {"names": ["Tom Becker"]}


def test_export_document_with_records_path() -> None:
    seen: list[int] = []
    convs, rejects = _read(FIXTURES / "chat_export.json", EXPORT, seen)
    assert rejects == [] and sum(seen) == 42
    assert [(c.source.line, c.source.id) for c in convs] == [(6, "WX-1"), (25, "WX-2")]
    assert convs[0].messages == [
        {"role": "user", "content": "My router's light is orange."},
        {"role": "bot", "content": "I can help with that! Connecting you to a person."},
        {"role": "assistant", "content": "Orange means a firmware update is running.\n\nGive it 10 minutes."},
    ]
    assert [m["role"] for m in convs[1].messages] == ["user", "assistant"]  # support@… is an agent


def test_document_errors_name_file_line_and_field(tmp_path: Path) -> None:
    wrong = EXPORT.model_copy(update={"fields": EXPORT.fields.model_copy(update={"records": "export.chats"})})
    with pytest.raises(DataError, match="fields.records 'export.chats' is not found") as err:
        list(read_input(FIXTURES / "chat_export.json", wrong, label="chat_export.json"))
    assert "chat_export.json" in str(err.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"export": {"conversations": [\n  {"ticket": {"ref": "X"},\n  "entries": [}\n]}}',
                      encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.json:3:\d+: input file is not valid JSON"):
        list(read_input(broken, EXPORT, label="broken.json"))


def test_pretty_printed_document_without_records_path_is_caught_early() -> None:
    spec = InputSpec(path="x", format="json_chat", fields=FieldMap(turns="entries", speaker="from"))
    with pytest.raises(DataError, match="fields.records"):
        check_input(FIXTURES / "chat_export.json", spec)
    check_input(FIXTURES / "chat_export.json", EXPORT)
    check_input(FIXTURES / "chat_widget.jsonl", WIDGET)


def test_duplicate_keys_follow_json_loads(tmp_path: Path) -> None:
    f = tmp_path / "dup.json"
    f.write_text('{"rows": [{"messages": []}],\n"rows": [\n'
                 '{"messages": [{"author": "customer", "text": "hi"}]}]}', encoding="utf-8")
    spec = InputSpec(path="x", format="json_chat", fields=FieldMap(records="rows"))
    convs, _ = _read(f, spec)
    assert [(c.source.line, c.messages) for c in convs] == [(3, [{"role": "user", "content": "hi"}])]


def test_meta_keys_fall_back_to_full_paths_on_collisions() -> None:
    assert meta_keys(["a.channel", "b.name", "c.name"]) == {
        "a.channel": "channel", "b.name": "b.name", "c.name": "c.name"}
