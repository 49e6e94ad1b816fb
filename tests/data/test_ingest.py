"""Tests for the ingest readers: OpenAI chat JSONL and CSV/TSV ticket exports."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from engine.config import CsvColumns, InputSpec, SpeakerMap
from engine.data.ingest.csv_tickets import check_columns, parse_transcript, read_csv_tickets
from engine.data.ingest.openai_jsonl import read_openai_jsonl, record_id
from engine.errors import DataError
from engine.records import Conversation, Reject

FIXTURES = Path(__file__).parent / "fixtures"
JSONL = FIXTURES / "support_tickets.jsonl"
CSV = FIXTURES / "tickets.csv"
TSV = FIXTURES / "pairs.tsv"


def _split(items: list[Conversation | Reject]) -> tuple[list[Conversation], list[Reject]]:
    return ([x for x in items if isinstance(x, Conversation)],
            [x for x in items if isinstance(x, Reject)])


def csv_spec(**columns: object) -> InputSpec:
    cols = {"id": "ticket_id", "transcript": "transcript", "meta": ["channel", "product"]}
    cols.update(columns)
    return InputSpec(path="tickets.csv", format="csv_tickets", columns=CsvColumns(**cols))


# ------------------------------------------------------------------------------- openai jsonl
def test_jsonl_good_lines_become_conversations_with_source_refs() -> None:
    convs, _ = _split(list(read_openai_jsonl(JSONL)))
    assert [(c.source.line, c.source.id) for c in convs] == [
        (1, "T-1001"), (2, "T-1002"), (4, "T-1004"), (6, "T-1005"), (7, "T-1006"), (8, "T-1007"),
        (11, "T-1010"), (12, "T-1011"), (13, "T-1012"), (14, "T-1013"), (16, None),
    ]
    first = convs[0]
    assert first.source.file == "support_tickets.jsonl"
    assert first.meta == {"product": "router", "channel": "email"}
    assert [m["role"] for m in first.messages] == ["user", "assistant"]
    assert first.id == record_id("support_tickets.jsonl", 1, "T-1001")
    assert len(first.id) == 16 and int(first.id, 16) >= 0
    assert len({c.id for c in convs}) == len(convs)
    assert convs[-1].meta == {}
    # a tool message comes through as role "tool" (the turns stage drops or keeps it)
    assert [m["role"] for m in convs[3].messages] == ["user", "tool", "assistant"]


def test_jsonl_bad_lines_are_rejected_with_line_numbers_and_no_text() -> None:
    _, rejects = _split(list(read_openai_jsonl(JSONL)))
    assert [(r.source.line, r.reason) for r in rejects] == [
        (3, "bad_json"), (9, "bad_schema"), (10, "bad_schema"), (15, "bad_schema"),
    ]
    assert all(r.stage == "ingest" for r in rejects)
    by_line = {r.source.line: r for r in rejects}
    assert "content is not a string" in by_line[9].detail
    assert by_line[3].detail.startswith("Expecting ',' delimiter at column ")
    assert int(by_line[3].detail.rsplit(" ", 1)[1]) > 100  # where the line breaks off
    assert "messages" in by_line[10].detail
    assert by_line[9].source.id == "T-1008" and by_line[9].record_id
    raw = JSONL.read_text(encoding="utf-8")
    for r in rejects:  # details name positions and rules, never customer text
        for word in ("parcel", "monday", "diagnostic", "tool", "roaming"):
            assert word not in r.detail
        assert r.detail and r.detail not in raw


def test_jsonl_label_and_progress_callback(tmp_path: Path) -> None:
    seen: list[int] = []
    items = list(read_openai_jsonl(JSONL, label="tickets-2024.jsonl", advance=seen.append))
    assert sum(seen) == 16  # every physical line, blank ones included
    assert all(x.source.file == "tickets-2024.jsonl" for x in items)


def test_jsonl_bad_utf8_line_is_rejected_not_fatal(tmp_path: Path) -> None:
    good = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(good + b'{"messages": "\xff\xfe broken"}\n' + good)
    convs, rejects = _split(list(read_openai_jsonl(f)))
    assert [c.source.line for c in convs] == [1, 3]
    assert [(r.source.line, r.reason) for r in rejects] == [(2, "bad_encoding")]


def test_jsonl_lone_surrogate_and_bom(tmp_path: Path) -> None:
    f = tmp_path / "bom.jsonl"
    body = ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
            '{"messages": [{"role": "user", "content": "bad \\ud800"}, {"role": "assistant", "content": "x"}]}\n')
    f.write_bytes(codecs.BOM_UTF8 + body.encode())
    convs, rejects = _split(list(read_openai_jsonl(f)))
    assert [c.source.line for c in convs] == [1]
    assert [(r.source.line, r.reason) for r in rejects] == [(2, "bad_schema")]


def test_jsonl_unreadable_files_raise_data_error_naming_the_file(tmp_path: Path) -> None:
    utf16 = tmp_path / "export-utf16.jsonl"
    utf16.write_bytes('{"messages": []}\n'.encode("utf-16"))
    with pytest.raises(DataError, match="export-utf16.jsonl") as err:
        list(read_openai_jsonl(utf16))
    assert "UTF-8" in str(err.value)
    with pytest.raises(DataError, match="nowhere.jsonl"):
        list(read_openai_jsonl(tmp_path / "nowhere.jsonl"))
    with pytest.raises(DataError, match="directory"):
        list(read_openai_jsonl(tmp_path))
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"messages": [{"role": "user", "content": "caf\u00e9"}]}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="latin1.jsonl"):
        list(read_openai_jsonl(latin1))


# -------------------------------------------------------------------------------- csv tickets
def test_csv_transcript_multiline_turns_and_speaker_variants() -> None:
    convs, rejects = _split(list(read_csv_tickets(CSV, csv_spec())))
    assert [(c.source.line, c.source.id) for c in convs] == [(2, "C-2001"), (8, "C-2002"), (14, "C-2005")]
    assert convs[0].messages == [
        {"role": "user", "content": "Hi, my router light is blinking red.\nIt started yesterday after the storm."},
        {"role": "assistant",
         "content": "Thanks for reaching out! Please unplug it for 30 seconds.\nThen plug it back in."},
        {"role": "user", "content": "Done, it works now."},
        {"role": "assistant", "content": "Great, glad it's fixed!"},
    ]
    assert convs[1].messages == [
        {"role": "user", "content": "Why was I billed twice? My email is sam@example.net"},
        {"role": "assistant", "content": "I see two charges and I've refunded one. Reference: 7781."},
    ]
    # the header line before the first speaker is dropped; two Customer lines are merged
    assert convs[2].messages == [
        {"role": "user", "content": "Please call me back on 555-123-4567.\nAny time after 5pm."},
        {"role": "assistant", "content": "Will do, we'll call you after 5pm."},
    ]
    assert convs[0].meta == {"channel": "chat", "product": "router"}
    assert convs[0].source.file == "tickets.csv"
    assert convs[0].id == record_id("tickets.csv", 2, "C-2001")
    assert [(r.source.line, r.source.id, r.reason) for r in rejects] == [
        (11, "C-2003", "empty_transcript"), (12, "C-2004", "empty_transcript"),
    ]
    assert all(r.record_id for r in rejects)


def test_csv_progress_counts_physical_lines() -> None:
    seen: list[int] = []
    list(read_csv_tickets(CSV, csv_spec(), advance=seen.append))
    assert sum(seen) == 17


def test_tsv_customer_agent_columns_with_automatic_tab_delimiter() -> None:
    spec = InputSpec(path="pairs.tsv", format="csv_tickets",
                     columns=CsvColumns(id="id", customer="customer", agent="agent", meta=["queue"]))
    convs, rejects = _split(list(read_csv_tickets(TSV, spec)))
    assert [(c.source.line, c.source.id) for c in convs] == [(2, "P-1"), (3, "P-2"), (5, "P-4")]
    assert convs[0].messages == [
        {"role": "user", "content": "Where is my refund?"},
        {"role": "assistant", "content": "It was issued today and should arrive in 3-5 days."},
    ]
    assert convs[1].messages == [{"role": "user", "content": "Hello?"}]  # quality rejects it later
    assert convs[0].meta == {"queue": "billing"}
    assert [(r.source.line, r.reason) for r in rejects] == [(4, "empty_transcript")]


def test_csv_missing_column_is_a_data_error_naming_file_and_column() -> None:
    spec = csv_spec(meta=["channel", "priority"])
    with pytest.raises(DataError) as err:
        check_columns(CSV, spec)
    text = str(err.value)
    assert "tickets.csv" in text and "'priority'" in text and "columns.meta" in text
    assert "'ticket_id'" in text and "'transcript'" in text  # the hint lists what exists
    with pytest.raises(DataError, match="priority"):
        list(read_csv_tickets(CSV, spec))
    # a wrong delimiter shows up as a missing column too, with a hint about the delimiter
    wrong = InputSpec(path="x", format="csv_tickets", delimiter=";", columns=CsvColumns(transcript="transcript"))
    with pytest.raises(DataError, match="delimiter"):
        check_columns(CSV, wrong)


def test_csv_empty_and_non_utf8_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty.csv"):
        list(read_csv_tickets(empty, csv_spec()))
    bad = tmp_path / "latin.csv"
    bad.write_bytes("ticket_id,channel,product,transcript\nX,chat,a,\"Customer: caf\xe9\"\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv"):
        list(read_csv_tickets(bad, csv_spec()))


def test_parse_transcript_rules() -> None:
    speakers = SpeakerMap()
    text = ("Subject: refund\n"              # unknown speaker before any turn: dropped
            "CLIENT:  I want a refund\n"
            "for order #123: the blue one\n"  # continuation, even with a ':'
            "Note: customer sounded upset\n"   # unknown prefix: continuation
            "Support [bot]: Sure.\n"
            "assistant: Processing now.\n"
            "User:\n"                          # empty turn: dropped, so the assistant turns merge
            "Agent: Done.")
    assert parse_transcript(text, speakers) == [
        {"role": "user",
         "content": "I want a refund\nfor order #123: the blue one\nNote: customer sounded upset"},
        {"role": "assistant", "content": "Sure.\nProcessing now.\nDone."},
    ]
    custom = SpeakerMap(user=["Kunde"], assistant=["Mitarbeiter"])
    assert parse_transcript("kunde: Hallo\nMITARBEITER: Guten Tag", custom) == [
        {"role": "user", "content": "Hallo"}, {"role": "assistant", "content": "Guten Tag"},
    ]
    assert parse_transcript("Customer: hi", custom) == []
