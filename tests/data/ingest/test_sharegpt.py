"""ShareGPT ingest: from/value and role/content turns, JSON Lines and JSON arrays, rejects with lines."""

from __future__ import annotations

import json
from pathlib import Path

from engine.config import FieldMap, InputSpec, SpeakerMap
from engine.data.ingest import read_input
from engine.data.ingest.common import record_id
from engine.records import Conversation, Reject

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
SPEC = InputSpec(path="sharegpt.jsonl", format="sharegpt")


def _read(path: Path, spec: InputSpec = SPEC, label: str | None = None,
          seen: list[int] | None = None) -> tuple[list[Conversation], list[Reject]]:
    items = list(read_input(path, spec, label=label or path.name,
                            advance=seen.append if seen is not None else None))
    return ([x for x in items if isinstance(x, Conversation)], [x for x in items if isinstance(x, Reject)])


def test_sharegpt_lines_with_bom_crlf_blank_and_broken_lines() -> None:
    seen: list[int] = []
    convs, rejects = _read(FIXTURES / "sharegpt.jsonl", seen=seen)
    assert sum(seen) == 9
    assert [(c.source.line, c.source.id) for c in convs] == [
        (1, "SG-101"), (3, "102"), (5, "SG-104"), (8, "SG-107")]
    first = convs[0]
    assert [m["role"] for m in first.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert first.messages[1]["content"].startswith("My Brightwave thermostat shows error E42")
    assert first.id == record_id("sharegpt.jsonl", 1, "SG-101")
    # role/content variant under "messages", integer id, top-level system prompt
    assert convs[1].messages[0] == {"role": "system", "content": "Answer as Brightwave Home support."}
    assert [m["role"] for m in convs[1].messages] == ["system", "user", "assistant"]
    # function calls and observations are tool turns (the turns stage drops or keeps them)
    assert [m["role"] for m in convs[2].messages] == ["user", "tool", "tool", "assistant"]
    # labels outside the ShareGPT names go through the speakers map
    assert [m["role"] for m in convs[3].messages] == ["user", "assistant"]
    assert [(r.source.line, r.source.id, r.reason) for r in rejects] == [
        (4, None, "bad_json"), (6, "SG-105", "unknown_speaker"), (7, "SG-106", "bad_schema"),
        (9, "SG-108", "bad_schema")]
    by_line = {r.source.line: r for r in rejects}
    assert by_line[6].detail == "turn 2: speaker not in 'speakers'"
    assert by_line[6].record_id == record_id("sharegpt.jsonl", 6, "SG-105")
    raw = (FIXTURES / "sharegpt.jsonl").read_text(encoding="utf-8")
    for r in rejects:  # codes and positions only
        assert "moderator" not in r.detail and "Canada" not in r.detail
        assert r.detail not in raw


def test_sharegpt_unknown_speaker_can_be_mapped() -> None:
    spec = InputSpec(path="x", format="sharegpt", speakers=SpeakerMap(tool=["moderator"]))
    convs, _ = _read(FIXTURES / "sharegpt.jsonl", spec)
    assert [m["role"] for m in next(c for c in convs if c.source.id == "SG-105").messages] == ["user", "tool"]


def test_sharegpt_json_array_reports_each_record_line() -> None:
    seen: list[int] = []
    convs, rejects = _read(FIXTURES / "sharegpt_array.json", seen=seen)
    assert rejects == []
    assert [(c.source.line, c.source.id) for c in convs] == [(2, "A1"), (15, "A2")]
    assert sum(seen) == 28


def test_sharegpt_records_path_inside_a_document(tmp_path: Path) -> None:
    doc = {"meta": {"n": 1}, "data": {"items": [
        {"conversations": [{"from": "human", "value": "Is the hub Matter certified?"},
                           {"from": "gpt", "value": "Yes, since firmware 3.2."}]}]}}
    f = tmp_path / "export.json"
    f.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    spec = InputSpec(path="x", format="sharegpt", fields=FieldMap(records="data.items"))
    convs, _ = _read(f, spec)
    assert [(c.source.line, c.source.id) for c in convs] == [(7, None)]
    assert convs[0].messages[1] == {"role": "assistant", "content": "Yes, since firmware 3.2."}


def test_sharegpt_lone_surrogate_is_a_reject(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text('{"conversations": [{"from": "human", "value": "bad \\ud800"}]}\n', encoding="utf-8")
    convs, rejects = _read(f)
    assert convs == [] and [(r.reason, r.detail) for r in rejects] == [
        ("bad_schema", "invalid unicode (lone surrogate escape)")]
