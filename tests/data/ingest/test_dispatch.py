"""The ingest dispatcher: check_input's early errors, input_files, read_input for every format."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from engine.config import INPUT_FORMATS, CsvColumns, FieldMap, InputSpec
from engine.data.ingest import DIRECTORY_FORMATS, check_input, input_files, read_input
from engine.errors import DataError, StudioError
from engine.records import Conversation, Reject

FIXTURES = Path(__file__).parent.parent / "fixtures"
INGEST = FIXTURES / "ingest"
ONE_OF_EACH = {
    "openai_jsonl": (FIXTURES / "support_tickets.jsonl", {}),
    "sharegpt": (INGEST / "sharegpt.jsonl", {}),
    "alpaca": (INGEST / "alpaca.jsonl", {}),
    "csv_tickets": (FIXTURES / "tickets.csv",
                    {"columns": CsvColumns(id="ticket_id", transcript="transcript")}),
    "json_chat": (INGEST / "chat_export.json", {"fields": FieldMap(
        records="export.conversations", id="ticket.ref", turns="entries", speaker="from", text="html")}),
    "transcript": (INGEST / "transcripts.txt", {}),
    "email": (INGEST / "support.mbox", {}),
}


def _lines(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


@pytest.mark.parametrize("fmt", INPUT_FORMATS)
def test_every_format_reads_with_progress_and_source_refs(fmt: str) -> None:
    path, extra = ONE_OF_EACH[fmt]
    spec = InputSpec(path=path.name, format=fmt, **extra)  # type: ignore[arg-type]
    check_input(path, spec)
    seen: list[int] = []
    items = list(read_input(path, spec, label="input-1", advance=seen.append))
    convs = [x for x in items if isinstance(x, Conversation)]
    assert convs and all(isinstance(x, (Conversation, Reject)) for x in items)
    assert sum(seen) == sum(_lines(f) for f in input_files(path, spec))  # bar total == lines
    for x in items:
        assert x.source.file == "input-1" and x.source.line and x.source.line >= 1
    assert len({c.id for c in convs}) == len(convs)
    for c in convs:
        assert c.messages and all(m["role"] in ("system", "user", "assistant", "bot", "tool")
                                  and isinstance(m["content"], str) for m in c.messages)
    # deterministic: a second read gives the same records
    again = list(read_input(path, spec, label="input-1"))
    assert [x.to_dict() for x in again] == [x.to_dict() for x in items]


def test_check_input_errors_name_the_file(tmp_path: Path) -> None:
    spec = InputSpec(path="x", format="sharegpt")
    with pytest.raises(DataError, match="nowhere.jsonl.*not found"):
        check_input(tmp_path / "nowhere.jsonl", spec)
    with pytest.raises(DataError, match="directory") as err:
        check_input(tmp_path, spec)
    assert "transcript" in str(err.value)  # the hint says which formats take directories
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes('{"conversations": []}\n'.encode("utf-16"))
    with pytest.raises(DataError, match="utf16.jsonl.*UTF-8"):
        check_input(utf16, spec)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"conversations": [{"from": "human", "value": "caf\u00e9"}]}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="latin.jsonl"):
        check_input(latin, spec)
    csv = tmp_path / "t.csv"
    csv.write_text("id,body\n1,hi\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t.csv.*'transcript' \(columns.transcript\)"):
        check_input(csv, InputSpec(path="x", format="csv_tickets",
                                   columns=CsvColumns(transcript="transcript")))
    text = tmp_path / "notes.json"
    text.write_text("hello\n", encoding="utf-8")
    with pytest.raises(DataError, match="not one JSON document"):
        check_input(text, InputSpec(path="x", format="json_chat", fields=FieldMap(records="rows")))
    assert issubclass(DataError, StudioError)


def test_a_bad_line_in_the_head_is_a_reject_not_a_check_error(tmp_path: Path) -> None:
    f = tmp_path / "mixed.jsonl"
    good = b'{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}\n'
    f.write_bytes(codecs.BOM_UTF8 + good + b'{"conversations": "\xff"}\n' + good)
    spec = InputSpec(path="x", format="sharegpt")
    check_input(f, spec)
    items = list(read_input(f, spec, label="mixed.jsonl"))
    assert [(type(x).__name__, x.source.line) for x in items] == [
        ("Conversation", 1), ("Reject", 2), ("Conversation", 3)]


def test_directory_formats() -> None:
    assert set(DIRECTORY_FORMATS) <= set(INPUT_FORMATS)
    mbox = INGEST / "support.mbox"
    assert input_files(mbox, InputSpec(path="x", format="email")) == [mbox]
