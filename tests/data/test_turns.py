"""Tests for the turns stage: roles, quoted replies, signatures, ticket boilerplate, merging."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.config import NormalizeSpec, TurnsSpec, load_config
from engine.data.stages.normalize import normalize_conversation
from engine.data.stages.turns import clean, clean_text, clean_turns
from engine.errors import ConfigError
from engine.records import Conversation, SourceRef

FIXTURES = Path(__file__).parent / "fixtures" / "turns"
THREADS = [json.loads(line) for line in (FIXTURES / "threads.jsonl").read_text(encoding="utf-8").splitlines()]


def conv(cid: str, *turns: tuple[str, str]) -> Conversation:
    return Conversation(id=cid, messages=[{"role": r, "content": c} for r, c in turns],
                        source=SourceRef("t.jsonl", 1, cid.upper()))


def clean1(text: str, **spec: Any) -> str:
    return clean_text(text, TurnsSpec(**spec))


# ------------------------------------------------------------------------- realistic threads
@pytest.mark.parametrize("case", THREADS, ids=[c["id"] for c in THREADS])
def test_threads_are_cleaned_exactly(case: dict[str, Any]) -> None:
    """Each fixture holds a raw thread, the exact expected turns and what the stage reports."""
    raw = Conversation(id=case["id"], messages=case["messages"], source=SourceRef("threads.jsonl", 1))
    before = copy.deepcopy(raw.messages)
    normalized, _ = normalize_conversation(raw, NormalizeSpec())  # the stage runs after normalize
    out, counts = clean_turns(normalized, TurnsSpec(**case["spec"]))
    assert out.messages == case["expected"], case["note"]
    assert dict(counts) == case["done"]
    assert raw.messages == before
    again, _ = clean_turns(out, TurnsSpec(**case["spec"]))  # idempotent on clean output
    assert again.messages == out.messages


# ---------------------------------------------------------------------------------- signatures
@pytest.mark.parametrize("closing", [
    "Best regards,\nMaria Lopez",
    "Kind regards\nMaria Lopez\nBrightwave Home | Customer Care\n+1 555 0100\nmaria@brightwave.example",
    "Best regards,\nTom Becker\nOrder Support Team\nBrightwave Home GmbH\nTel. +49 30 1234567",
    "Thanks in advance\nMaria",
    "Freundliche Grüsse\nUrs Keller",
    "Regards,\nTom",
    "Thanks,\nMaria",
    "Thank you,\nMaria Lopez\nApartment 4B",
    "Many thanks!\nMaria",
    "Thanks and best regards,\nMaria",
    "Cheers, Tom",
    "Best,\nTom",
    "Sincerely,\nMaria Lopez",
    "Best regards, the Brightwave team",
    "Mit freundlichen Grüßen\nKlaus Meier",
    "Danke und viele Grüße\nKlaus",
    "Viele Grüße,\nAnna Schmidt\nBrightwave Home Kundenservice",
    "LG\nAnna",
    "Cordialement,\nMarie Dupont",
    "Bien à vous,\nMarie",
    "Saludos cordiales,\nLucía García",
    "Un saludo,\nLucía",
    "Atentamente,\nLucía García\nAtención al cliente",
    "Cordiali saluti,\nMarco Rossi",
    "Met vriendelijke groet,\nSanne de Vries",
    "Atenciosamente,\nJoão Silva",
    "Med vänliga hälsningar\nErik",
    "--\nMaria Lopez\n+44 20 7946 0958",
])
def test_closing_and_signature_block_are_removed(closing: str) -> None:
    body = "My X200 router drops the wifi every evening.\nCan you help?"
    counts: Counter = Counter()
    assert clean_text(f"{body}\n\n{closing}", TurnsSpec(), counts) == body
    assert counts == Counter(signatures=1)


def test_closing_above_a_delimited_signature() -> None:
    text = ("The plug hums every 8 minutes.\n\nCheers,\nOskar\n\n--\nOskar Rossi\n+44 7700 900796\n"
            "2366 Church Lane, Leeds LS1 5AB")
    counts: Counter = Counter()
    assert clean_text(text, TurnsSpec(), counts) == "The plug hums every 8 minutes."
    assert counts == Counter(signatures=1)


@pytest.mark.parametrize("text", [
    "Thanks, that fixed it!",
    "It works now.\nThanks, that fixed it!",
    "It works now.\nThanks!",
    "Could you check the order?\nThanks",
    "Thanks Tom",
    "Done.\nThanks Tom",
    "Best regards,\nMaria",                                     # nothing above it: keep
    "Options I tried:\nReset\nBest\nNothing",                   # a list, not a closing
    "Still broken.\n\nThanks,\nMaria\n\nP.S. the light is red",  # a P.S. keeps the block
    "Still broken.\n\nRegards,\nMaria\nCan you call me back?",   # a question below: content
    "Still broken.\n\nRegards,\nMaria Lopez\nOrder #4821",      # the order number stays
    "Still broken.\n\nMit freundlichen Grüßen\nKlaus Meier\nKundennummer: 20-4471",
    "Steps:\n-- unplug the router\n-- wait 30 seconds",
    "Best practice: keep the router off the floor.",
    "Regards from the whole team aside, please send a photo of the label.",
    "Refunds take 3-5 business days.\n\nThanks for your patience",
    "Cheers to that! The new firmware is great.",
])
def test_content_that_looks_like_a_signature_is_kept(text: str) -> None:
    counts: Counter = Counter()
    assert clean_text(text, TurnsSpec(), counts) == text
    assert counts == Counter()


@pytest.mark.parametrize("line", [
    "Sent from my iPhone", "Sent from my Samsung Galaxy smartphone.", "Sent from my Android phone",
    "Get Outlook for iOS", "Get Outlook for Android", "Sent from Mail for Windows",
    "Sent from Yahoo Mail on Android", "Von meinem iPhone gesendet", "Envoyé de mon iPhone",
    "Enviado desde mi iPhone", "Inviato da iPhone", "Verzonden vanaf mijn iPhone",
    "Enviado do meu celular",
])
def test_sent_from_lines(line: str) -> None:
    counts: Counter = Counter()
    assert clean_text(f"The plug is offline.\n\n{line}", TurnsSpec(), counts) == "The plug is offline."
    assert counts == Counter(sent_from=1)
    kept = "Sent from my account yesterday: the payment of $49."
    assert clean1(kept) == kept


# ---------------------------------------------------------------------------------- quoted
@pytest.mark.parametrize("header", [
    "On Mon, 3 Mar 2026 at 10:02, Brightwave Support <support@brightwave.example> wrote:",
    "On Mon, Mar 3, 2026 at 10:02 AM Brightwave Support wrote:",
    "On 3 Mar 2026, at 10:02, Tom Becker <tom@brightwave.example> wrote:",
    "On Mon, 3 Mar 2026 at 10:02, Brightwave Support <support@brightwave.example>\nwrote:",
    "Am 03.03.2026 um 10:02 schrieb Brightwave Support <support@brightwave.example>:",
    "Le lun. 3 mars 2026 à 10:02, Brightwave Support <support@brightwave.example> a écrit :",
    "El lun, 3 mar 2026 a las 10:02, Brightwave Support (<support@brightwave.example>) escribió:",
    "Il giorno lun 3 mar 2026 alle ore 10:02 Brightwave <support@brightwave.example> ha scritto:",
    "Op ma 3 mrt. 2026 om 10:02 schreef Brightwave <support@brightwave.example>:",
    "Em seg., 3 de mar. de 2026 às 10:02, Brightwave <support@brightwave.example> escreveu:",
    "-----Original Message-----",
    "----- Original Message -----",
    "-----Ursprüngliche Nachricht-----",
    "________________________________\nFrom: Brightwave Support <support@brightwave.example>\n"
    "Sent: Tuesday, March 4, 2026 9:15 AM\nTo: Jane Doe\nSubject: RE: Router [Ticket #48213]",
    "From: Brightwave Support\nSent: Tuesday, March 4, 2026 9:15 AM\nTo: Jane Doe\nSubject: RE: Router",
    "De : Brightwave <support@brightwave.example>\nEnvoyé : mardi 4 mars 2026 09:15\nÀ : Marie\nObjet : RE: Routeur",
])
def test_quoted_reply_and_everything_below_is_removed(header: str) -> None:
    text = (f"The light is still orange.\n\n{header}\nPlease hold the reset button for 10 seconds.\n\n"
            "Kind regards,\nTom")
    counts: Counter = Counter()
    assert clean_text(text, TurnsSpec(), counts) == "The light is still orange."
    assert counts == Counter(quoted=1)


def test_inline_quotes_are_removed_and_answers_kept() -> None:
    text = ("On Tue, 4 Mar 2026 at 09:15, Tom <tom@brightwave.example> wrote:\n"
            "> Did you restart the hub?\nYes, twice.\n\n> And is the LED blue?\n>\n>> older quote\nNo, orange.")
    assert clean1(text) == "Yes, twice.\n\nNo, orange."


@pytest.mark.parametrize("text", [
    "On Monday my router wrote: error 42 on the display.",
    "On 3 March 2026 I wrote:\nmy router is broken and nobody answered.",  # no time, no address
    "Shipping details:\nFrom: Berlin warehouse\nTo: Munich\nDate: 3 March\nWhere is the parcel?",
    ">5 minutes of blinking is normal after a reset.",
    "Speed -> 5 Mbps, ping > 200 ms",
    "Please see below.\n\n---------- Forwarded message ---------\nFrom: Brightwave <orders@brightwave.example>\n"
    "Date: Mon, 3 Mar 2026 at 10:02\nSubject: Your order 4821\nTo: <jane@example.com>\n\nYour order has shipped.",
])
def test_content_that_looks_like_a_quote_is_kept(text: str) -> None:
    assert clean1(text) == text


# ----------------------------------------------------------------------------- boilerplate
@pytest.mark.parametrize("text, expected", [
    ("[Ticket #48213] updated\nThe replacement ships today.", "The replacement ships today."),
    ("Your request (48213) has been updated.\nThe replacement ships today.", "The replacement ships today."),
    ("The replacement ships today.\n\nThis ticket was created via the web form.", "The replacement ships today."),
    ("##- Please type your reply above this line -##\n\nThe replacement ships today.",
     "The replacement ships today."),
    ("Thanks, got it!\n\n##- Bitte geben Sie Ihre Antwort über dieser Zeile ein. -##\n\nTom (Brightwave)\nold text",
     "Thanks, got it!"),
    ("Please do not reply below this line\nThe replacement ships today.", "The replacement ships today."),
    ("The replacement ships today.\n\nHow would you rate our support?\nGood, I'm satisfied\nBad, I'm unsatisfied",
     "The replacement ships today."),
    ("The replacement ships today.\n\nCONFIDENTIALITY NOTICE: This e-mail and any attachments are "
     "intended only for the addressee.\n\nIf you have received this message in error, please delete it.",
     "The replacement ships today."),
    ("Der Ersatz ist unterwegs.\n\nDiese E-Mail enthält vertrauliche Informationen und ist nur für den "
     "Empfänger bestimmt.", "Der Ersatz ist unterwegs."),
])
def test_ticket_boilerplate(text: str, expected: str) -> None:
    counts: Counter = Counter()
    assert clean_text(text, TurnsSpec(), counts) == expected
    assert counts == Counter(boilerplate=1)


def test_boilerplate_keeps_real_sentences() -> None:
    for text in ("How would you rate my chances of a refund?",
                 "Your request for a refund has been approved.",
                 "This email address is the one on my account.",
                 "The ticket 48213 was updated by you yesterday, but nothing changed."):
        assert clean1(text) == text


def test_extra_boilerplate_regexes_match_stripped_lines() -> None:
    spec = {"boilerplate": [r"^Ticket assigned to queue: \w+$", r"(?i)internal note"]}
    text = "My plug is offline.\n   Ticket assigned to queue: devices\nINTERNAL NOTE - escalate\nPlease help."
    assert clean1(text, **spec) == "My plug is offline.\nPlease help."


# ------------------------------------------------------------------------------- switches
def test_each_switch_turns_its_part_off() -> None:
    text = ("The hub is offline.\n> old quote\n[Ticket #1] updated\n\nBest regards,\nMaria\n"
            "Sent from my iPhone")
    assert clean1(text) == "The hub is offline."
    assert clean1(text, strip_quoted=False) == "The hub is offline.\n> old quote"
    assert clean1(text, strip_boilerplate=False) == "The hub is offline.\n[Ticket #1] updated"
    assert clean1(text, strip_signatures=False) == \
        "The hub is offline.\n\nBest regards,\nMaria\nSent from my iPhone"
    off = TurnsSpec(strip_quoted=False, strip_boilerplate=False, strip_signatures=False)
    assert clean_text(text, off) == text


# ----------------------------------------------------------------------------------- roles
def test_roles_merge_and_empty_turns() -> None:
    c = conv("c", ("system", "You are Brightwave's support assistant."),
             ("bot", "Hi! How can I help?"), ("user", "hub offline"), ("user", "  "),
             ("user", "since today"), ("tool", "crm.lookup ok"), ("assistant", "Let me check."),
             ("assistant", "It's back online."))
    out, counts = clean_turns(c, TurnsSpec())
    assert out.messages == [
        {"role": "system", "content": "You are Brightwave's support assistant."},
        {"role": "user", "content": "hub offline\n\nsince today"},
        {"role": "assistant", "content": "Let me check.\n\nIt's back online."},
    ]
    assert counts == Counter(bot_dropped=1, tool_dropped=1, empty_dropped=1, merged=2)
    out, counts = clean_turns(c, TurnsSpec(merge_consecutive=False, keep_tool_turns=True,
                                           bot_turns="assistant"))
    assert [m["role"] for m in out.messages] == ["system", "assistant", "user", "user", "tool",
                                                 "assistant", "assistant"]
    assert counts == Counter(bot_as_assistant=1, empty_dropped=1)


def test_tool_and_system_turns_are_kept_verbatim() -> None:
    c = conv("c", ("system", "Sign every answer.\n\nBest regards,\nBrightwave"), ("user", "hi"),
             ("tool", "> raw\nSent from my iPhone"), ("tool", "second call"), ("assistant", "hello"))
    out, _ = clean_turns(c, TurnsSpec(keep_tool_turns=True))
    assert out.messages == c.messages  # tool turns are never merged with each other


def test_extra_message_keys_survive() -> None:
    c = Conversation(id="k", messages=[{"role": "user", "content": "hi\n\nThanks,\nJane", "name": "jane"}],
                     source=SourceRef("f", 1), meta={"channel": "email"}, hints={"names": ["Jane"]})
    out, _ = clean_turns(c, TurnsSpec())
    assert out.messages == [{"role": "user", "content": "hi", "name": "jane"}]
    assert out.meta == {"channel": "email"} and out.hints == {"names": ["Jane"]}


def test_clean_streams_and_counts() -> None:
    records = [conv("a", ("bot", "Hi!"), ("user", "plug offline"), ("assistant", "Fixed.\n\nCheers,\nSam")),
               conv("b", ("user", "ok"), ("assistant", "great")),
               conv("c", ("tool", "webhook")),
               ]
    stats: Counter = Counter()
    out = list(clean(iter(records), TurnsSpec(), stats))
    assert [c.id for c in out] == ["a", "b", "c"]
    assert out[0].messages == [{"role": "user", "content": "plug offline"},
                               {"role": "assistant", "content": "Fixed."}]
    assert out[1] .messages == records[1].messages
    assert out[2].messages == []  # passed on: the quality stage rejects it with a reason
    assert stats == Counter(records=3, changed=2, bot_dropped=1, signatures=1, tool_dropped=1)


# ------------------------------------------------------------------------------------ config
def test_bad_boilerplate_regex_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "refine.yaml"
    cfg.write_text("kind: refine\nrefine:\n  dataset: tickets\n  inputs: [{path: t.jsonl, format: openai_jsonl}]\n"
                   "  turns:\n    boilerplate:\n      - '^Ticket assigned'\n      - '(unclosed'\n",
                   encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert "refine.turns.boilerplate" in msg and "entry 1" in msg and "regular expression" in msg
    with pytest.raises(ValueError, match="empty string"):
        TurnsSpec(boilerplate=[".*"])
    assert TurnsSpec(boilerplate=[r"^\[Brightwave\]"]).boilerplate == [r"^\[Brightwave\]"]
