"""JSON Lines inputs read in spans (engine/data/ingest: line_spans, read_input's `span`), as the
datatrove ingest reads one big export on many tasks: every cut at a line start, the lines
numbered as in the whole file, and the spans' items, one after the other, exactly the whole
file's (a byte-order mark, CRLF, blank lines, bad JSON and bad UTF-8 included)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.config import InputSpec
from engine.data.ingest import json_lines_input, line_spans, read_input


def _messy_lines(rng: random.Random, n: int) -> bytes:
    out = []
    for i in range(n):
        kind = rng.random()
        end = b"\r\n" if rng.random() < 0.3 else b"\n"
        if kind < 0.1:
            out.append(b"   " + end)  # blank
        elif kind < 0.2:
            out.append(b'{"messages": [' + end)  # bad JSON
        elif kind < 0.25:
            out.append(b"\xff\xfe{bad}" + end)  # not UTF-8
        else:
            text = "word " * rng.choice([1, 5, 40, 300])
            out.append(json.dumps({"id": f"c{i}", "messages": [
                {"role": "user", "content": f"question {i}: {text}"},
                {"role": "assistant", "content": "an answer"}]}).encode() + end)
    for line in (b"\n", b"{oops\n", b"\xff\xfe{bad}\n"):  # one of each, somewhere
        out.insert(rng.randint(0, len(out)), line)
    return b"\xef\xbb\xbf" + b"".join(out)  # a byte-order mark on line 1


@pytest.mark.parametrize("seed", range(6))
def test_spans_cut_at_line_starts_and_read_what_the_whole_file_reads(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "export.jsonl"
    data = _messy_lines(rng, rng.randint(1, 120))
    if seed % 2:
        data = data.rstrip(b"\r\n")  # no newline at the end
    path.write_bytes(data)
    spec = InputSpec(path="export.jsonl", format="openai_jsonl")
    whole = list(read_input(path, spec, label="export.jsonl"))
    reasons = {getattr(item, "reason", "record") for item in whole}
    assert {"record", "bad_json", "bad_encoding"} <= reasons
    for parts in (1, 2, 3, 7, 50):
        spans = line_spans(path, parts)
        assert spans[0][:1] == (0,) and spans[0][2] == 1 and spans[-1][1] == -1
        assert len(spans) <= parts
        for (start, end, first), nxt in zip(spans, [*spans[1:], None]):
            assert start == 0 or data[start - 1:start] == b"\n"  # a line start
            assert first == data[:start].count(b"\n") + 1  # numbered as in the whole file
            if nxt is not None:
                assert end == nxt[0] > start
        pieced = [item for span in spans for item in read_input(path, spec, label="export.jsonl",
                                                                 span=span)]
        assert pieced == whole, parts


def test_only_json_lines_inputs_are_read_in_spans(tmp_path: Path) -> None:
    lines, document = tmp_path / "lines.jsonl", tmp_path / "doc.json"
    lines.write_text('{"id": "a", "messages": []}\n', encoding="utf-8")
    document.write_text('[{"id": "a", "messages": []}]', encoding="utf-8")
    chat = InputSpec(path="x", format="json_chat")
    assert json_lines_input(lines, chat) and not json_lines_input(document, chat)
    assert not json_lines_input(lines, InputSpec(path="x", format="transcript"))
    with pytest.raises(ValueError, match="read whole"):
        list(read_input(document, chat, label="doc.json", span=(0, -1, 1)))
