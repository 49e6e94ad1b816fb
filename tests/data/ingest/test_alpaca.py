"""Alpaca ingest: instruction/input/output/system/history, JSON Lines and the JSON-array file."""

from __future__ import annotations

from pathlib import Path

from engine.config import InputSpec
from engine.data.ingest import read_input
from engine.records import Conversation, Reject

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
SPEC = InputSpec(path="alpaca.jsonl", format="alpaca")


def _read(path: Path, seen: list[int] | None = None) -> tuple[list[Conversation], list[Reject]]:
    items = list(read_input(path, SPEC, label=path.name,
                            advance=seen.append if seen is not None else None))
    return ([x for x in items if isinstance(x, Conversation)], [x for x in items if isinstance(x, Reject)])


def test_alpaca_lines() -> None:
    seen: list[int] = []
    convs, rejects = _read(FIXTURES / "alpaca.jsonl", seen)
    assert sum(seen) == 7
    assert [(c.source.line, c.source.id) for c in convs] == [(1, None), (2, "AL-2"), (3, "AL-3")]
    assert convs[0].messages == [
        {"role": "user", "content": "Explain how to pair a Brightwave motion sensor with the hub."},
        {"role": "assistant", "content": "Open the app, tap Add device, choose Motion sensor and "
                                         "press the sensor's button until it blinks."}]
    assert convs[1].messages == [
        {"role": "system", "content": "You are Brightwave Home support. Be brief and friendly."},
        {"role": "user", "content": "Reply to the customer about a late delivery.\n\n"
                                    "Order #77120 was due Monday and still hasn't arrived."},
        {"role": "assistant", "content": "Sorry for the delay! Order #77120 is with the courier and "
                                         "arrives tomorrow."}]
    assert [m["role"] for m in convs[2].messages] == ["user", "assistant", "user", "assistant"]
    assert convs[2].messages[0]["content"] == "Where is my order #77120?"
    assert [(r.source.line, r.reason, r.detail) for r in rejects] == [
        (4, "bad_schema", "'output' is not a string"),
        (5, "bad_schema", "no 'instruction' text"),
        (6, "bad_schema", "history entry 1 is not a [question, answer] pair"),
        (7, "bad_json", "Unterminated string starting at at column 17"),
    ]


def test_alpaca_json_array_file() -> None:
    seen: list[int] = []
    convs, rejects = _read(FIXTURES / "alpaca_data.json", seen)
    assert rejects == [] and sum(seen) == 12
    assert [c.source.line for c in convs] == [2, 7]
    assert convs[1].messages[0]["content"] == ("Give the customer the warranty length.\n\n"
                                               "Product: Brightwave smart lock")
