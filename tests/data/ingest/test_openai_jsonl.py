"""OpenAI chat JSONL ingest additions: tool/function/developer roles, speakers map, unknown roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import InputSpec, SpeakerMap
from engine.data.ingest import check_input, read_input
from engine.errors import DataError
from engine.records import Conversation, Reject


def _line(*roles: str, id: str | None = None) -> str:
    msgs = [{"role": r, "content": f"turn {i}"} for i, r in enumerate(roles)]
    return json.dumps({"id": id, "messages": msgs} if id else {"messages": msgs})


def _read(path: Path, spec: InputSpec) -> tuple[list[Conversation], list[Reject]]:
    items = list(read_input(path, spec, label=path.name))
    return ([x for x in items if isinstance(x, Conversation)], [x for x in items if isinstance(x, Reject)])


def test_roles_outside_the_chat_three(tmp_path: Path) -> None:
    f = tmp_path / "chat.jsonl"
    f.write_text("\n".join([
        _line("developer", "user", "assistant", "tool", "assistant", id="O-1"),
        _line("user", "function", "assistant", id="O-2"),
        _line("user", "Brightwave Bot", "agent", id="O-3"),
        _line("user", "critic", id="O-4"),
    ]) + "\n", encoding="utf-8")
    spec = InputSpec(path="chat.jsonl", format="openai_jsonl")
    convs, rejects = _read(f, spec)
    assert [[m["role"] for m in c.messages] for c in convs] == [
        ["system", "user", "assistant", "tool", "assistant"],
        ["user", "tool", "assistant"],
        ["user", "bot", "assistant"]]
    assert [(r.source.line, r.source.id, r.reason, r.detail) for r in rejects] == [
        (4, "O-4", "unknown_speaker",
         "message 2: unknown role (not system, user, assistant, tool or a label in 'speakers')")]
    mapped = InputSpec(path="chat.jsonl", format="openai_jsonl", speakers=SpeakerMap(tool=["critic"]))
    assert len(_read(f, mapped)[0]) == 4


def test_pretty_printed_json_is_caught_by_check_input(tmp_path: Path) -> None:
    f = tmp_path / "pretty.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}, indent=2), encoding="utf-8")
    with pytest.raises(DataError, match="pretty-printed"):
        check_input(f, InputSpec(path="x", format="openai_jsonl"))
