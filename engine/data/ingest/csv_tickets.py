"""Ingest CSV/TSV support-ticket exports (mapped columns, speaker-prefixed transcripts) into Conversations.

Two shapes, chosen by the `columns` mapping of the input:
  * `transcript`: one cell holds lines like "Customer: …" / "Agent (Maria): …", split into turns by
    engine.data.ingest.speakers.parse_turns (speaker labels through the input's `speakers` map;
    lines without a known speaker continue the previous turn; lines before the first speaker are
    dropped; an unknown speaker rejects the row). Consecutive turns of one speaker are merged.
  * `customer` + `agent`: one cell each, giving a user turn and an assistant turn.
`id` becomes the source id; `meta` columns are copied into Conversation.meta (eval slice keys);
`customer_name` goes into Conversation.hints["names"] (for the PII stage, never written out).
The delimiter is `delimiter` (`"\t"` for TSV; a .tsv/.tab file with none set is tab-separated).
Every row reports its first physical line number (quoted cells may span lines).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from engine.config import InputSpec, SpeakerMap
from engine.data.ingest.common import Advance, check_readable_utf8, record_id
from engine.data.ingest.speakers import ParsedTurns, parse_turns
from engine.errors import DataError
from engine.records import Conversation, Reject, SourceRef

STAGE = "ingest"
_FIELD_LIMIT = 1 << 26  # 64 MiB per cell: long transcripts exceed csv's 128 KiB default

csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))


def delimiter_for(path: str | Path, spec: InputSpec) -> str:
    """The configured delimiter; a .tsv/.tab file whose config leaves it unset is tab-separated."""
    if "delimiter" not in spec.model_fields_set and Path(path).suffix.lower() in (".tsv", ".tab"):
        return "\t"
    return spec.delimiter


def merge_turns(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Drop blank turns, then merge consecutive turns of the same role (joined by a newline)."""
    merged: list[dict[str, str]] = []
    for role, content in turns:
        if not content.strip():
            continue
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"] += "\n" + content
        else:
            merged.append({"role": role, "content": content})
    return merged


def _cell_turns(text: str, speakers: SpeakerMap) -> ParsedTurns:
    return parse_turns(list(enumerate(text.splitlines(), start=1)), speakers)


def parse_transcript(text: str, speakers: SpeakerMap) -> list[dict[str, str]]:
    """Split a 'Customer: …' / 'Agent: …' transcript cell into merged chat messages
    ([] when it has no known speaker or an unknown one)."""
    parsed = _cell_turns(text, speakers)
    return merge_turns([(t.role, t.text) for t in parsed.turns])


def _open(path: Path) -> TextIO:
    return open(path, encoding="utf-8-sig", newline="")


def _read_header(path: Path, reader: Iterator[list[str]]) -> list[str]:
    for row in reader:
        if any(cell.strip() for cell in row):
            return [cell.strip() for cell in row]
    raise DataError("CSV file is empty (no header row)", where=str(path),
                    hint="the first row must name the columns")


def _required_columns(spec: InputSpec) -> list[tuple[str, str]]:
    """(mapping key, column name) for every mapped column."""
    cols = spec.columns
    assert cols is not None
    pairs = [(key, getattr(cols, key))
             for key in ("id", "transcript", "customer", "agent", "customer_name")]
    out = [(key, name) for key, name in pairs if name]
    out += [("meta", name) for name in cols.meta]
    return out


def _column_index(path: Path, header: list[str], spec: InputSpec) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(name, i)
    for key, name in _required_columns(spec):
        if name not in index:
            shown = ", ".join(repr(h) for h in header[:50]) + (" …" if len(header) > 50 else "")
            raise DataError(
                f"column {name!r} (columns.{key}) is not in the header",
                where=str(path),
                hint=f"the file has columns: {shown}; fix the 'columns' mapping or the delimiter",
            )
    return index


def check_columns(path: str | Path, spec: InputSpec) -> list[str]:
    """Read only the header and raise DataError naming file and column if a mapped one is missing."""
    p = Path(path)
    check_readable_utf8(p)
    try:
        with _open(p) as f:
            header = _read_header(p, csv.reader(f, delimiter=delimiter_for(p, spec)))
    except UnicodeDecodeError:
        raise DataError("input file is not UTF-8 text (in the header)", where=str(path)) from None
    except csv.Error as exc:
        raise DataError(f"cannot parse the CSV header ({exc})", where=str(path)) from None
    _column_index(p, header, spec)
    return header


def read_csv_tickets(path: str | Path, spec: InputSpec, *, label: str | None = None,
                     advance: Advance | None = None) -> Iterator[Conversation | Reject]:
    """Yield a Conversation per usable row and a Reject per unusable one, in file order.

    `advance(n)` receives the number of physical lines each row consumed (for progress bars).
    """
    p = Path(path)
    file = label or p.name
    cols = spec.columns
    if cols is None:
        raise DataError("format 'csv_tickets' needs a 'columns' mapping", where=str(path))
    check_readable_utf8(p)
    with _open(p) as f:
        reader = csv.reader(f, delimiter=delimiter_for(p, spec))
        try:
            header = _read_header(p, reader)
        except UnicodeDecodeError:
            raise DataError("input file is not UTF-8 text (in the header)", where=str(path)) from None
        except csv.Error as exc:
            raise DataError(f"cannot parse the CSV header ({exc})", where=str(path)) from None
        index = _column_index(p, header, spec)
        if advance is not None:
            advance(reader.line_num)
        prev = reader.line_num
        rows = iter(reader)
        while True:
            start = prev + 1
            try:
                row = next(rows)
            except StopIteration:
                break
            except UnicodeDecodeError:
                raise DataError(f"input file is not UTF-8 text (near line {start})",
                                where=str(path), hint="re-export the file as UTF-8") from None
            except csv.Error as exc:
                if advance is not None:
                    advance(max(reader.line_num - prev, 1))
                prev = max(reader.line_num, start)
                yield Reject(source=SourceRef(file, start), stage=STAGE, reason="bad_csv_row",
                             detail=str(exc).split(":")[0][:80])
                continue
            if advance is not None:
                advance(reader.line_num - prev)
            prev = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank line

            def cell(column: str | None, _row: list[str] = row) -> str:
                if not column:
                    return ""
                i = index[column]
                return _row[i] if i < len(_row) else ""

            sid = cell(cols.id).strip() or None
            rid = record_id(file, start, sid)
            src = SourceRef(file, start, sid)
            names: list[str] = []
            if cols.transcript:
                parsed = _cell_turns(cell(cols.transcript), spec.speakers)
                if parsed.unknown_line is not None:
                    yield Reject(source=src, stage=STAGE, reason="unknown_speaker",
                                 detail=f"cell line {parsed.unknown_line}: speaker not in 'speakers'",
                                 record_id=rid)
                    continue
                messages = merge_turns([(t.role, t.text) for t in parsed.turns])
                names = parsed.names
            else:
                messages = merge_turns([("user", cell(cols.customer).strip()),
                                        ("assistant", cell(cols.agent).strip())])
            if not messages:
                yield Reject(source=src, stage=STAGE, reason="empty_transcript",
                             detail="no turn with a known speaker and text", record_id=rid)
                continue
            meta = {name: cell(name).strip() for name in cols.meta}
            customer = cell(cols.customer_name).strip()
            if customer and customer not in names:
                names = [customer, *names]
            conv = Conversation(id=rid, messages=messages, source=src, meta=meta)
            if names:
                conv.hints["names"] = names
            yield conv
