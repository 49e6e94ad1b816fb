"""Ingest dispatcher: checks an input and reads it with the reader of its `format` into Conversations.

`check_input(path, spec)` is cheap (file heads and CSV headers only) and raises a DataError naming
the file for anything that would stop the read: missing, unreadable, not UTF-8, a CSV without the
mapped columns, a pretty-printed JSON document where JSON Lines are expected, an empty directory.
`read_input(path, spec, label=…, advance=…)` streams Conversation and Reject records in file order;
`advance(n)` reports input lines consumed (all files of a directory input together).
`input_files(path, spec)` lists the files an input stands for (a directory → its files, sorted),
for hashing and line counting.

One module per format: openai_jsonl, sharegpt, alpaca, csv_tickets, json_chat, transcript, email.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from engine.config import InputSpec
from engine.data.ingest.alpaca import read_alpaca
from engine.data.ingest.common import (
    Span,
    check_json_lines_head,
    check_readable_utf8,
    check_text_head,
    first_char,
    is_json_document,
)
from engine.data.ingest.csv_tickets import check_columns, read_csv_tickets
from engine.data.ingest.email import check_email, email_files, read_email
from engine.data.ingest.json_chat import read_json_chat
from engine.data.ingest.openai_jsonl import read_openai_jsonl
from engine.data.ingest.sharegpt import read_sharegpt
from engine.data.ingest.transcript import read_transcript, transcript_files
from engine.errors import DataError
from engine.records import Conversation, Reject

DIRECTORY_FORMATS = ("transcript", "email")


def input_files(path: Path, spec: InputSpec) -> list[Path]:
    """The files behind an input path: the path itself, or a directory's *.txt (transcript) or
    *.eml (email) files in sorted order."""
    p = Path(path)
    if not p.exists():
        raise DataError("input file not found", where=str(path),
                        hint="relative input paths resolve against the config file's folder")
    if p.is_dir():
        if spec.format == "transcript":
            return transcript_files(p)
        if spec.format == "email":
            return email_files(p)
        raise DataError("input path is a directory, not a file", where=str(path),
                        hint="only 'transcript' and 'email' inputs may be a directory")
    return [p]


def _check_json(path: Path, spec: InputSpec) -> None:
    records = spec.fields.records if spec.fields else None
    if records:
        head = check_readable_utf8(path)
        if first_char(head) not in ("{", "["):
            raise DataError("'fields.records' is set, but the file is not one JSON document",
                            where=str(path), hint="unset 'fields.records' for JSON Lines")
        return
    head = check_text_head(path)
    if first_char(head) == "[" and spec.format != "openai_jsonl":
        check_readable_utf8(path)  # read as one document: it must decode
        return
    check_json_lines_head(path, head, spec.format)


def check_input(path: Path, spec: InputSpec) -> None:
    """Raise DataError (naming the file) if the input cannot be read as its format."""
    files = input_files(path, spec)
    fmt = spec.format
    if fmt in ("openai_jsonl", "sharegpt", "alpaca", "json_chat"):
        _check_json(files[0], spec)
    elif fmt == "csv_tickets":
        check_columns(files[0], spec)
    elif fmt == "transcript":
        for f in files:
            check_text_head(f)
    elif fmt == "email":
        check_email(Path(path))
    else:  # pragma: no cover - InputSpec.format is a Literal
        raise DataError(f"unknown input format {fmt!r}", where=str(path))


def read_input(path: Path, spec: InputSpec, *, label: str,
               advance: Callable[[int], None] | None = None,
               span: Span | None = None) -> Iterator[Conversation | Reject]:
    """Stream the input's Conversations and Rejects in file order (see the format modules).
    `span`: only that part of a JSON Lines input (see `line_spans`)."""
    fmt = spec.format
    if span is not None and not json_lines_input(path, spec):
        raise ValueError(f"{path}: a {fmt} input is read whole, not by byte ranges")
    if fmt == "openai_jsonl":
        return read_openai_jsonl(path, label=label, advance=advance, speakers=spec.speakers,
                                 span=span)
    if fmt == "sharegpt":
        return read_sharegpt(path, spec, label=label, advance=advance, span=span)
    if fmt == "alpaca":
        return read_alpaca(path, spec, label=label, advance=advance, span=span)
    if fmt == "csv_tickets":
        return read_csv_tickets(path, spec, label=label, advance=advance)
    if fmt == "json_chat":
        return read_json_chat(path, spec, label=label, advance=advance, span=span)
    if fmt == "transcript":
        return read_transcript(path, spec, label=label, advance=advance)
    if fmt == "email":
        return read_email(path, spec, label=label, advance=advance)
    raise DataError(f"unknown input format {fmt!r}", where=str(path))  # pragma: no cover


def json_lines_input(path: Path, spec: InputSpec) -> bool:
    """Whether the input is JSON Lines, one record per line: it can be read in parts."""
    if spec.format == "openai_jsonl":
        return True
    if spec.format in ("sharegpt", "alpaca", "json_chat"):
        return not is_json_document(path, spec.fields.records if spec.fields else None)
    return False


def line_spans(path: Path, parts: int) -> list[Span]:
    """A JSON Lines file cut into up to `parts` spans of about equal bytes, each starting at a
    line start, its lines numbered as in the file (one pass over the file, counting newlines)."""
    size = path.stat().st_size
    spans: list[Span] = []
    start, first = 0, 1
    pos, line, last = 0, 1, b"\n"  # `line`: the number of the line that byte `pos` is in
    with open(path, "rb") as f:
        for k in range(1, parts):
            cut = size * k // parts
            if cut <= pos:  # a long line took us past this cut already
                continue
            while pos < cut and (chunk := f.read(min(1 << 20, cut - pos))):
                line += chunk.count(b"\n")
                pos, last = pos + len(chunk), chunk[-1:]
            if last != b"\n":  # the cut fell inside a line: the span ends after it
                rest = f.readline()
                line += rest.endswith(b"\n")
                pos, last = pos + len(rest), b"\n"
            if pos >= size:
                break
            spans.append((start, pos, first))
            start, first = pos, line
    spans.append((start, -1, first))
    return spans


__all__ = ["DIRECTORY_FORMATS", "check_input", "input_files", "json_lines_input", "line_spans",
           "read_input"]
