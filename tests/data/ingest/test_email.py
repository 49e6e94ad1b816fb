"""E-mail ingest: mbox and .eml, threading, date order, speakers from From, bodies, names."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import InputSpec, SpeakerMap
from engine.data.ingest import check_input, input_files, read_input
from engine.data.ingest.common import record_id
from engine.errors import DataError
from engine.records import Conversation, Reject

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
MBOX = FIXTURES / "support.mbox"
SPEC = InputSpec(path="support.mbox", format="email")
DOMAIN = InputSpec(path="emails", format="email",
                   speakers=SpeakerMap(assistant=[*SpeakerMap().assistant, "@brightwave.example"]))


def _read(path: Path, spec: InputSpec = SPEC, label: str = "support.mbox",
          seen: list[int] | None = None) -> tuple[list[Conversation], list[Reject]]:
    items = list(read_input(path, spec, label=label, advance=seen.append if seen is not None else None))
    return ([x for x in items if isinstance(x, Conversation)], [x for x in items if isinstance(x, Reject)])


def test_mbox_threads_in_date_order_with_roles_and_bodies() -> None:
    seen: list[int] = []
    convs, rejects = _read(MBOX, seen=seen)
    assert rejects == [] and sum(seen) == 138
    # threads in the order their first message appears; source = that message's "From " line
    assert [(c.source.line, c.source.id) for c in convs] == [(1, "4471"), (15, None), (52, None), (120, None)]
    assert convs[0].id == record_id("support.mbox", 1, "4471")
    thermostat = convs[0].messages
    # four messages linked by References/In-Reply-To; the last two are stored out of date order
    assert [m["role"] for m in thermostat] == ["user", "assistant", "user", "assistant"]
    assert thermostat[0]["content"].startswith("Hello,\nmy Brightwave thermostat has been offline")
    # multipart/alternative: the text/plain part, quoted text and signature left for the turns stage
    assert thermostat[1]["content"] == (
        "Hi Ana,\nE42 means the thermostat lost its Wi-Fi pairing. Hold the dial for 10 seconds.\n\n"
        "-- \nBrightwave Home Support\n\n"
        "> my Brightwave thermostat has been offline since yesterday's power cut.")
    assert thermostat[2]["content"] == "That worked, it's online again!\nThanks"  # HTML only → text
    assert thermostat[3]["content"] == "Hi Ana,\nglad it works again. Tschüss!\nBrightwave Home Support"
    assert convs[0].hints == {"names": ["Ana Ruiz"]}
    # no References: joined by subject (Re:/RE:/AW: removed) and the customer's address;
    # noreply@ is an automated message, billing@ with "Brightwave Support" an agent
    refund = convs[1].messages
    assert [m["role"] for m in refund] == ["user", "bot", "user", "assistant"]
    assert refund[3]["content"].startswith("Sorry Tom, the refund went out today")
    assert convs[1].hints == {"names": ["Tom Becker"]}
    # two customers with the same subject are two threads; attachments are not text
    assert convs[2].messages == [{"role": "user", "content": "The smart lock invoice is attached. "
                                                            "Why was I charged shipping?"}]
    assert convs[3].hints == {"names": ["Noah Park"]}


def test_eml_directory_threads_across_files() -> None:
    spec = DOMAIN
    assert [p.name for p in input_files(FIXTURES / "emails", spec)] == [
        "01-question.eml", "02-reply.eml", "03-warranty.eml"]
    check_input(FIXTURES / "emails", spec)
    seen: list[int] = []
    convs, rejects = _read(FIXTURES / "emails", spec, label="emails", seen=seen)
    assert rejects == [] and sum(seen) == 37
    assert [(c.source.file, c.source.line) for c in convs] == [
        ("emails/01-question.eml", 1), ("emails/03-warranty.eml", 1)]
    chime = convs[0]
    assert chime.messages[0] == {"role": "user",  # CRLF, quoted-printable latin-1, plain part preferred
                                 "content": "My doorbell chime stopped ringing. Could you help? Grüße, Ana"}
    assert chime.messages[1]["role"] == "assistant"  # "Luis from Brightwave" via @brightwave.example
    assert chime.messages[1]["content"].endswith("> My doorbell chime stopped ringing.")
    assert chime.hints == {"names": ["Ana Ruiz"]}  # "Ruiz, Ana" as written in text
    # without the domain label the agent's reply would count as the customer's
    plain = _read(FIXTURES / "emails", InputSpec(path="x", format="email"), label="emails")[0]
    assert [m["role"] for m in plain[0].messages] == ["user", "user"]


def test_single_eml_file() -> None:
    convs, _ = _read(FIXTURES / "emails" / "03-warranty.eml", label="03-warranty.eml")
    assert [(c.source.file, c.source.line) for c in convs] == [("03-warranty.eml", 1)]
    assert convs[0].messages == [{"role": "user", "content": "How long is the warranty on the air purifier?"}]


def test_undated_message_keeps_its_place(tmp_path: Path) -> None:
    f = tmp_path / "t.mbox"
    f.write_text(
        "From a@example.com Mon Mar  2 09:00:00 2026\nFrom: a@example.com\nSubject: Hub\n"
        "Date: Mon, 02 Mar 2026 09:00:00 +0000\n\nfirst\n\n"
        "From support@brightwave.example Mon Mar  2 09:00:00 2026\nFrom: support@brightwave.example\n"
        "To: a@example.com\nSubject: Re: Hub\n\nsecond (no date)\n\n"
        "From a@example.com Mon Mar  2 08:00:00 2026\nFrom: a@example.com\nSubject: RE: hub\n"
        "Date: Mon, 02 Mar 2026 08:00:00 +0000\n\nzeroth\n", encoding="utf-8")
    convs, _ = _read(f, label="t.mbox")
    assert [m["content"] for m in convs[0].messages] == ["zeroth", "first", "second (no date)"]
    assert convs[0].source.line == 1 and convs[0].hints == {}  # no display name, no name hint


def test_not_an_email_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.mbox"
    bad.write_text("hello there\n", encoding="utf-8")
    with pytest.raises(DataError, match="not an mbox file"):
        check_input(bad, SPEC)
    empty = tmp_path / "mail"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no \*\.eml files"):
        check_input(empty, SPEC)
    check_input(MBOX, SPEC)


def test_encoded_headers_unknown_charset_and_attachment_only(tmp_path: Path) -> None:
    f = tmp_path / "enc.eml"
    f.write_bytes(
        b"From: =?utf-8?q?Jos=C3=A9_N=C3=BA=C3=B1ez?= <jose@example.com>\r\n"
        b"To: support@brightwave.example\r\n"
        b"Subject: =?utf-8?b?UmU6IFLDvGNrZXJzdGF0dHVuZyBbVGlja2V0ICM5MDAxXQ==?=\r\n"
        b"Content-Type: text/plain; charset=x-unknown-charset\r\n\r\n"
        b"Die R\xc3\xbcckerstattung fehlt.\r\nBitte pr\xc3\xbcfen.\r\n")
    convs, _ = _read(f, label="enc.eml")
    assert convs[0].hints == {"names": ["José Núñez"]}
    assert convs[0].source.id == "9001"  # from the decoded subject "Re: Rückerstattung [Ticket #9001]"
    assert convs[0].messages == [{"role": "user", "content": "Die Rückerstattung fehlt.\nBitte prüfen."}]
    g = tmp_path / "scan.eml"
    g.write_text("From: Kim Lee <kim@example.net>\nSubject: scan\nMIME-Version: 1.0\n"
                 'Content-Type: multipart/mixed; boundary="x"\n\n--x\nContent-Type: image/png\n'
                 "Content-Disposition: attachment; filename=a.png\n\niVBORw0KGgo=\n--x--\n", encoding="utf-8")
    assert _read(g, label="scan.eml")[0][0].messages == [{"role": "user", "content": ""}]


def test_raw_utf8_headers(tmp_path: Path) -> None:
    f = tmp_path / "raw.eml"
    f.write_bytes("From: Zoë Müller <zoe@example.de>\nSubject: Lüfter laut\n\nDer Lüfter ist laut.\n"
                  .encode("utf-8"))
    convs, _ = _read(f, label="raw.eml")
    assert convs[0].hints == {"names": ["Zoë Müller"]}
    assert convs[0].messages == [{"role": "user", "content": "Der Lüfter ist laut."}]
