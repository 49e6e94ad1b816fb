"""Speaker labels → roles, and 'Speaker: text' transcript lines → turns (engine.data.ingest.speakers)."""

from __future__ import annotations

import pytest

from engine.config import SpeakerMap
from engine.data.ingest.speakers import looks_like_speaker, parse_turns, role_for, split_line
from engine.records import INGEST_ROLES


@pytest.mark.parametrize(("label", "role"), [
    ("Customer", "user"),
    ("  CUSTOMER ", "user"),
    ("**Client**", "user"),
    ("Agent (Maria)", "assistant"),
    ("Maria (Agent)", "assistant"),
    ("Support [bot]", "assistant"),
    ("Brightwave Bot", "bot"),
    ("Virtual Assistant", "bot"),
    ("Customer Support", "assistant"),        # the last words name the role
    ("Agent Maria Lopez", "assistant"),
    ("Brightwave Home Support Team", "assistant"),
    ("support@brightwave.example", "assistant"),
    ("Brightwave Support <help@brightwave.example>", "assistant"),
    ("support-team@brightwave.example", "assistant"),
    ("noreply@brightwave.example", "bot"),
    ("System", "system"),
    ("webhook", "tool"),
    ("API", "tool"),
    ("Ana Ruiz", None),
    ("Ana Ruiz <ana.ruiz@example.com>", None),
    ("The agent said", None),                 # a sentence, not a label
    ("", None),
])
def test_role_for_default_labels(label: str, role: str | None) -> None:
    assert role_for(label, SpeakerMap()) == role


def test_role_for_custom_lists_domains_and_precedence() -> None:
    speakers = SpeakerMap(user=["Kunde"], assistant=["Mitarbeiter", "@brightwave.example"],
                          bot=["kunde"])
    assert role_for("KUNDE", speakers) == "user"  # listed twice: user comes first
    assert role_for("Mitarbeiter (Jonas)", speakers) == "assistant"
    assert role_for("Luis from Brightwave <luis@brightwave.example>", speakers) == "assistant"
    assert role_for("luis@eu.brightwave.example", speakers) == "assistant"  # subdomain
    assert role_for("luis@brightwave.example.evil.test", speakers) is None
    assert role_for("Customer", speakers) is None  # defaults are replaced, not extended
    assert {role_for(x, SpeakerMap()) for x in ("customer", "agent", "system", "bot", "tool")} \
        == set(INGEST_ROLES)


def test_split_line_timestamps() -> None:
    assert split_line("[10:32] Customer: hi") == (True, True, "Customer", " hi")
    assert split_line("10:32:05 Agent: hello") == (True, False, "Agent", " hello")
    assert split_line("2026-03-01 10:32 Maria: ok")[2] == "Maria"
    assert split_line("[2026-03-01T10:32:05Z] Bot: hi")[2] == "Bot"
    assert split_line("(10:32 AM) Customer: hi")[2] == "Customer"
    assert split_line("Customer (10:32): hi")[2] == "Customer (10:32)"
    assert split_line("[10:40] Maria joined the chat") == (True, True, None, "Maria joined the chat")
    assert split_line("10:32 is when it broke")[2] is None
    assert split_line("see https://brightwave.example/help")[2] is None


def test_looks_like_speaker() -> None:
    assert looks_like_speaker("Maria") and looks_like_speaker("Ana Ruiz")
    assert looks_like_speaker("Maria (Brightwave)") and looks_like_speaker("ana@example.com")
    for text in ("for order #123", "note", "I said", "Error E42", "One Two Three Four"):
        assert not looks_like_speaker(text)


def _lines(text: str) -> list[tuple[int, str]]:
    return list(enumerate(text.split("\n"), start=1))


def test_parse_turns_continuations_headers_and_events() -> None:
    parsed = parse_turns(_lines(
        "Channel: chat\n"                              # header before the first turn: dropped
        "[10:32] Customer (Ana Ruiz): Hi, my hub is offline.\n"
        "It blinks red: three times.\n"                 # continuation, even with a ':'
        "\n"
        "Note: bought in January\n"                     # unknown once, no timestamp: continuation
        "[10:33] Brightwave Bot: An agent will join.\n"
        "[10:33] Maria left the chat\n"                 # chat event: dropped
        "[10:34] Agent: Please restart it.\n"
        "[10:34] Agent: Then wait two minutes."), SpeakerMap())
    assert [(t.role, t.line) for t in parsed.turns] == [
        ("user", 2), ("bot", 6), ("assistant", 8), ("assistant", 9)]  # not merged here
    assert parsed.turns[0].text == ("Hi, my hub is offline.\nIt blinks red: three times.\n\n"
                                    "Note: bought in January")
    assert parsed.names == ["Ana Ruiz"]
    assert parsed.unknown_line is None


def test_parse_turns_unknown_speakers() -> None:
    # one unknown speaker facing a known agent is the customer (and a name for the PII stage)
    inferred = parse_turns(_lines("[09:00] Tom Becker: refund?\n[09:01] Agent: Done.\n"
                                  "[09:02] Tom Becker: thanks"), SpeakerMap())
    assert [t.role for t in inferred.turns] == ["user", "assistant", "user"]
    assert inferred.names == ["Tom Becker"]
    # one unknown speaker facing a known customer is the agent (no name hint)
    agent = parse_turns(_lines("Customer: hi\nMaria: hello\nCustomer: bye\nMaria: bye"), SpeakerMap())
    assert [t.role for t in agent.turns] == ["user", "assistant", "user", "assistant"]
    assert agent.names == []
    # two unknown speakers: the conversation cannot be labelled
    both = parse_turns(_lines("Customer: cancel please\n[11:03] Jordan: which plan?\n"
                              "[11:03] Kelly: I can take this."), SpeakerMap())
    assert both.unknown_line == 2 and both.turns == []
    # a repeated unknown label without timestamps counts as a speaker too
    repeated = parse_turns(_lines("Ana: hi\nBen: hello\nAna: bye"), SpeakerMap())
    assert repeated.unknown_line == 1
