"""Plain-text transcript ingest: separators, headers, timestamps, continuations, directories."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from engine.config import InputSpec, SpeakerMap
from engine.data.ingest import check_input, input_files, read_input
from engine.data.ingest.common import record_id
from engine.errors import DataError
from engine.records import Conversation, Reject

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
TXT = FIXTURES / "transcripts.txt"
SPEC = InputSpec(path="transcripts.txt", format="transcript")


def _read(path: Path, spec: InputSpec = SPEC, label: str = "transcripts.txt",
          seen: list[int] | None = None) -> tuple[list[Conversation], list[Reject]]:
    items = list(read_input(path, spec, label=label, advance=seen.append if seen is not None else None))
    return ([x for x in items if isinstance(x, Conversation)], [x for x in items if isinstance(x, Reject)])


def test_transcript_file() -> None:
    seen: list[int] = []
    convs, rejects = _read(TXT, seen=seen)
    assert sum(seen) == 27
    assert [(c.source.line, c.source.id) for c in convs] == [(3, "4471"), (10, "4472"), (15, None)]
    assert convs[0].id == record_id("transcripts.txt", 3, "4471")
    assert convs[0].messages == [
        {"role": "user", "content": "Hi, my thermostat says E42."},
        {"role": "assistant", "content": "Hi! E42 means it lost its Wi-Fi pairing.\n"
                                         "Hold the dial for 10 seconds to re-pair it."},
        {"role": "user", "content": "Done: it's back online."},
    ]  # "[10:36] Maria left the chat" is a chat event, not text
    # the one unknown speaker facing the bot and the agent is the customer, and a name to redact
    assert [m["role"] for m in convs[1].messages] == ["user", "bot", "assistant"]
    assert convs[1].messages[0]["content"] == "is the smart plug compatible with Alexa?"
    assert convs[1].hints == {"names": ["Ana Ruiz"]}
    assert convs[2].messages[0]["content"] == ("My order #88120 arrived damaged.\n\n"
                                               "The box was crushed and the lamp is cracked.")
    assert [(r.source.line, r.source.id, r.reason, r.detail) for r in rejects] == [
        (1, None, "empty_transcript", "no turn with a known speaker"),     # the export's title
        (20, "T-4474", "unknown_speaker", "line 22: speaker not in 'speakers'"),
        (25, "T-4475", "empty_transcript", "no turn with a known speaker"),
    ]


def test_crlf_bom_and_custom_speakers(tmp_path: Path) -> None:
    f = tmp_path / "crlf.txt"
    f.write_bytes(codecs.BOM_UTF8 + TXT.read_text(encoding="utf-8").replace("\n", "\r\n").encode())
    speakers = SpeakerMap(assistant=["agent", "support", "Jordan"], user=["customer", "Kelly"])
    convs, rejects = _read(f, InputSpec(path="x", format="transcript", speakers=speakers))
    assert [(c.source.line, c.source.id) for c in convs] == [(3, "4471"), (10, "4472"), (15, None),
                                                             (20, "T-4474")]
    assert all("\r" not in m["content"] for c in convs for m in c.messages)
    assert [m["role"] for m in convs[3].messages] == ["user", "assistant", "user"]
    assert [r.source.line for r in rejects] == [1, 25]


def test_directory_reads_sorted_txt_files(tmp_path: Path) -> None:
    (tmp_path / "b-0302.txt").write_text("Chat #2\nCustomer: Is the hub waterproof?\n"
                                         "Agent: No, indoor only.\n")
    (tmp_path / "a-0301.txt").write_text("Customer: Reset my password\nAgent: Sent you a link.\n"
                                         "===\nCustomer: thanks\n")
    (tmp_path / "readme.md").write_text("not a transcript")
    spec = InputSpec(path="chats", format="transcript")
    assert [p.name for p in input_files(tmp_path, spec)] == ["a-0301.txt", "b-0302.txt"]
    check_input(tmp_path, spec)
    seen: list[int] = []
    convs, rejects = _read(tmp_path, spec, label="chats", seen=seen)
    assert [(c.source.file, c.source.line, c.source.id) for c in convs] == [
        ("chats/a-0301.txt", 1, None), ("chats/a-0301.txt", 4, None), ("chats/b-0302.txt", 1, "2")]
    assert convs[1].messages == [{"role": "user", "content": "thanks"}]  # the quality stage decides
    assert rejects == [] and sum(seen) == 7


def test_bad_utf8_line_rejects_its_conversation_only(tmp_path: Path) -> None:
    f = tmp_path / "mixed.txt"
    f.write_bytes(b"Customer: caf\xe9 order\nAgent: ok\n---\nCustomer: hi\nAgent: hello\n")
    convs, rejects = _read(f, label="mixed.txt")
    assert [c.source.line for c in convs] == [4]
    assert [(r.source.line, r.reason, r.detail) for r in rejects] == [
        (1, "bad_encoding", "line 1: invalid UTF-8")]


def test_unreadable_inputs_are_data_errors(tmp_path: Path) -> None:
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Customer: caf\xe9\nAgent: s\xfcr\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.txt"):
        check_input(latin, SPEC)
    with pytest.raises(DataError, match="latin.txt"):
        list(read_input(latin, SPEC, label="latin.txt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no \*\.txt files"):
        check_input(empty, SPEC)
    with pytest.raises(DataError, match="not found"):
        check_input(tmp_path / "missing.txt", SPEC)
