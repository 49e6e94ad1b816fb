"""CSV/TSV ticket ingest additions: customer_name hints, tab delimiter, speaker labels, unknown speakers."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import CsvColumns, InputSpec
from engine.data.ingest import check_input, read_input
from engine.errors import DataError
from engine.records import Conversation, Reject

TSV = ("ticket_id\tcustomer_name\tqueue\ttranscript\r\n"
       "T-1\tAna Ruiz\tbilling\t\"Customer: I was charged twice for order 88120.\r\n"
       "Agent (Maria): Refunded one charge, Ana.\"\r\n"
       "T-2\t\trouters\t\"[10:02] Tom Becker: router is blinking red\r\n"
       "[10:03] Brightwave Bot: An agent will join.\r\n"
       "[10:05] Support: Please restart it.\"\r\n"
       "T-3\tKim Lee\tlocks\t\"[09:00] Jordan: hi\r\n[09:01] Kelly: hello\"\r\n"
       "\r\n")


def _spec(**columns: object) -> InputSpec:
    cols: dict[str, object] = {"id": "ticket_id", "transcript": "transcript", "meta": ["queue"],
                               "customer_name": "customer_name"}
    cols.update(columns)
    return InputSpec(path="tickets.tsv", format="csv_tickets", delimiter="\t", columns=CsvColumns(**cols))


def _read(path: Path, spec: InputSpec) -> tuple[list[Conversation], list[Reject]]:
    items = list(read_input(path, spec, label=path.name))
    return ([x for x in items if isinstance(x, Conversation)], [x for x in items if isinstance(x, Reject)])


def test_tsv_with_customer_names_and_speaker_labels(tmp_path: Path) -> None:
    f = tmp_path / "export.txt"  # not .tsv: the tab comes from `delimiter`
    f.write_bytes(b"\xef\xbb\xbf" + TSV.encode())
    check_input(f, _spec())
    convs, rejects = _read(f, _spec())
    assert [(c.source.line, c.source.id) for c in convs] == [(2, "T-1"), (4, "T-2")]
    assert convs[0].messages == [
        {"role": "user", "content": "I was charged twice for order 88120."},
        {"role": "assistant", "content": "Refunded one charge, Ana."}]
    assert convs[0].meta == {"queue": "billing"}
    assert convs[0].hints == {"names": ["Ana Ruiz"]}
    assert "Ana Ruiz" not in str(convs[0].to_dict())
    # an unnamed speaker facing the bot and an agent is the customer; the bot turn stays "bot"
    assert [m["role"] for m in convs[1].messages] == ["user", "bot", "assistant"]
    assert convs[1].hints == {"names": ["Tom Becker"]}
    assert [(r.source.line, r.source.id, r.reason, r.detail) for r in rejects] == [
        (7, "T-3", "unknown_speaker", "cell line 1: speaker not in 'speakers'")]


def test_missing_customer_name_column_is_named(tmp_path: Path) -> None:
    f = tmp_path / "export.tsv"
    f.write_text(TSV.replace("customer_name", "name"), encoding="utf-8")
    with pytest.raises(DataError, match=r"'customer_name' \(columns.customer_name\)"):
        check_input(f, _spec())
