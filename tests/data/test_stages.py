"""Tests for the refine stages: normalize, pii, quality, dedup, split."""

from __future__ import annotations

from collections import Counter

import pytest

from engine.config import DedupSpec, NormalizeSpec, PiiSpec, SplitSpec
from engine.data.stages.dedup import dedup
from engine.data.stages.normalize import NormalizeStats, normalize, normalize_text
from engine.data.stages.pii import PiiStats, luhn_ok, redact, redact_text
from engine.data.stages.quality import check, gate
from engine.data.stages.split import assign, split
from engine.records import Conversation, Reject, SourceRef


def conv(cid: str, *turns: tuple[str, str], line: int = 1) -> Conversation:
    return Conversation(id=cid, messages=[{"role": r, "content": c} for r, c in turns],
                        source=SourceRef("t.jsonl", line, cid.upper()))


# ---------------------------------------------------------------------------------- normalize
def test_normalize_text_whitespace_and_unicode() -> None:
    spec = NormalizeSpec()
    assert normalize_text("  Hello\u00a0\u00a0 there!\t\tHow  are you?  ", spec) == "Hello there! How are you?"
    assert normalize_text("line one  \r\n   line two\r\rline three", spec) == "line one\nline two\n\nline three"
    assert normalize_text("a\n\n\n\n\nb\n \n\t\nc", spec) == "a\n\nb\n\nc"
    assert normalize_text("ＡＢＣ１２３ ﬁle", spec) == "ABC123 file"         # NFKC folds width/ligatures
    assert normalize_text("bell\x07 and\x00 nul", spec) == "bell and nul"
    nfc = NormalizeSpec(unicode_form="NFC")
    assert normalize_text("ＡＢＣ cafe\u0301", nfc) == "ＡＢＣ caf\u00e9"     # NFC composes, keeps width
    raw = NormalizeSpec(collapse_whitespace=False)
    assert normalize_text("  a   b \n\n\n c ", raw) == "a   b \n\n\n c"


def test_normalize_drops_empty_turns_and_counts() -> None:
    stats = NormalizeStats()
    records = [conv("a", ("user", "  hi  "), ("assistant", " \n\t "), ("assistant", "hello")),
               conv("b", ("user", "ok"), ("assistant", "fine"))]
    out = list(normalize(records, NormalizeSpec(), stats))
    assert out[0].messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert out[1].messages == records[1].messages
    assert records[0].messages[0]["content"] == "  hi  "  # input not mutated
    assert (stats.records, stats.changed, stats.turns_dropped) == (2, 1, 1)


# ---------------------------------------------------------------------------------------- pii
@pytest.mark.parametrize("text, expected", [
    ("Email jane.doe@example.com or JOHN+tix@Mail.Example.CO.UK.",
     "Email <EMAIL> or <EMAIL>."),
    ("Call +44 20 7946 0958 today", "Call <PHONE> today"),
    ("or (555) 123-4567, 555-123-4567 and 555.123.4567.", "or <PHONE>, <PHONE> and <PHONE>."),
    ("US: +1 415 555 0100; DE: 0049 30 1234567; +49-30-1234567", "US: <PHONE>; DE: <PHONE>; <PHONE>"),
    ("Reach me (+1 415 555 0100) or +44 (0)20 7946 0958", "Reach me (<PHONE>) or <PHONE>"),
    ("card 4111 1111 1111 1111 expires 12/27", "card <CARD> expires 12/27"),
    ("cards 4111-1111-1111-1111, 4111111111111111 and amex 3782 822463 10005",
     "cards <CARD>, <CARD> and amex <CARD>"),
    ("old card 1234 5678 9012 3456 was cancelled", "old card 1234 5678 9012 3456 was cancelled"),
    ("Order #482913 shipped", "Order #482913 shipped"),
    ("delivery on 2024-03-05 14:30 or 05.03.2024 at 10:30", "delivery on 2024-03-05 14:30 or 05.03.2024 at 10:30"),
    ("ticket 2024-03-05-0001, invoice INV-2024-000123", "ticket 2024-03-05-0001, invoice INV-2024-000123"),
    ("short 555 1234, refund $1234567890, ip 192.168.100.200",
     "short 555 1234, refund $1234567890, ip 192.168.100.200"),
    ("3-5 business days, 24 hours, order 7781", "3-5 business days, 24 hours, order 7781"),
])
def test_redact_text_exact_output(text: str, expected: str) -> None:
    assert redact_text(text, PiiSpec())[0] == expected


def test_redact_counts_per_type_and_switches() -> None:
    text = "a@b.io, c@d.org, +44 20 7946 0958, 4111 1111 1111 1111, 1234 5678 9012 3456"
    out, counts = redact_text(text, PiiSpec())
    assert out == "<EMAIL>, <EMAIL>, <PHONE>, <CARD>, 1234 5678 9012 3456"
    assert counts == Counter(email=2, phone=1, card=1)
    out, counts = redact_text(text, PiiSpec(emails=False, cards=False))
    assert out == "a@b.io, c@d.org, <PHONE>, 4111 1111 1111 1111, 1234 5678 9012 3456"
    assert counts == Counter(phone=1)


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("5500000000000004") and luhn_ok("378282246310005")
    assert not luhn_ok("1234567890123456") and not luhn_ok("4111111111111112")


def test_redact_records_tracks_per_record_counts() -> None:
    stats = PiiStats()
    records = [conv("a", ("user", "mail me: x@y.com"), ("assistant", "call 555-123-4567?")),
               conv("b", ("user", "nothing here"), ("assistant", "ok"))]
    out = list(redact(records, PiiSpec(), stats))
    assert out[0].messages[0]["content"] == "mail me: <EMAIL>"
    assert out[0].messages[1]["content"] == "call <PHONE>?"
    assert stats.per_record == {"a": {"email": 1, "phone": 1}}
    assert stats.totals == Counter(email=1, phone=1) and stats.records_redacted == 1


# ------------------------------------------------------------------------------------ quality
def test_quality_reasons() -> None:
    ok = conv("ok", ("system", "s"), ("user", "q"), ("assistant", "a"))
    cases = {
        "few": conv("few", ("system", "s"), ("user", "q")),
        "nouser": conv("nouser", ("assistant", "a"), ("assistant", "b")),
        "noasst": conv("noasst", ("user", "a"), ("user", "b")),
        "lastuser": conv("lastuser", ("user", "a"), ("assistant", "b"), ("user", "c")),
        "empty": conv("empty"),
    }
    assert check(ok, 2) is None
    assert check(cases["few"], 2)[0] == "too_few_turns"
    assert check(cases["nouser"], 2)[0] == "no_user_turn"
    assert check(cases["noasst"], 2)[0] == "no_final_assistant_turn"
    assert check(cases["lastuser"], 2)[0] == "no_final_assistant_turn"
    assert check(cases["empty"], 1)[0] == "too_few_turns"
    assert check(cases["few"], 1)[0] == "no_final_assistant_turn"
    out = list(gate([ok, *cases.values()], 2))
    assert out[0] is ok
    rejects = [r for r in out if isinstance(r, Reject)]
    assert [(r.record_id, r.stage, r.reason) for r in rejects] == [
        ("few", "quality", "too_few_turns"), ("nouser", "quality", "no_user_turn"),
        ("noasst", "quality", "no_final_assistant_turn"), ("lastuser", "quality", "no_final_assistant_turn"),
        ("empty", "quality", "too_few_turns"),
    ]
    assert rejects[0].source.id == "FEW"


# -------------------------------------------------------------------------------------- dedup
def test_dedup_first_survives_and_clusters_are_recorded() -> None:
    a = conv("a", ("user", "Where is my order?"), ("assistant", "It ships today."), line=1)
    b = conv("b", ("user", "other question"), ("assistant", "other answer"), line=2)
    a2 = conv("a2", ("user", "where IS my  order?"), ("assistant", "It ships\ntoday."), line=3)
    a3 = conv("a3", ("user", "Where is my order?"), ("assistant", "It ships today."), line=4)
    swapped = conv("s", ("assistant", "Where is my order?"), ("user", "It ships today."), line=5)
    clusters: dict[str, list[str]] = {}
    out = list(dedup([a, b, a2, a3, swapped], DedupSpec(), clusters))
    assert [x.id for x in out if isinstance(x, Conversation)] == ["a", "b", "s"]
    rejects = [x for x in out if isinstance(x, Reject)]
    assert [(r.record_id, r.reason, r.detail, r.source.line) for r in rejects] == [
        ("a2", "exact_duplicate", "duplicate of a", 3), ("a3", "exact_duplicate", "duplicate of a", 4),
    ]
    assert clusters == {"a": ["a2", "a3"]}
    assert len(list(dedup([a, a3], DedupSpec(exact=False)))) == 2


# -------------------------------------------------------------------------------------- split
def test_split_is_deterministic_stable_and_close_to_fractions() -> None:
    spec = SplitSpec(val_fraction=0.1, eval_fraction=0.2)
    ids = [f"{i:016x}" for i in range(4000)]
    first = [assign(i, 42, spec) for i in ids]
    assert first == [assign(i, 42, spec) for i in ids]
    counts = Counter(first)
    assert abs(counts["eval"] / 4000 - 0.2) < 0.03 and abs(counts["val"] / 4000 - 0.1) < 0.03
    # a record's split does not depend on the other records
    assert [assign(i, 42, spec) for i in ids[::7]] == first[::7]
    # another seed gives another assignment
    assert [assign(i, 7, spec) for i in ids] != first
    # zero fractions put everything into train
    assert {assign(i, 42, SplitSpec(val_fraction=0, eval_fraction=0)) for i in ids} == {"train"}


def test_split_keeps_input_order() -> None:
    records = [conv(f"r{i}", ("user", "q"), ("assistant", "a")) for i in range(50)]
    out = list(split(records, 1, SplitSpec(val_fraction=0.2, eval_fraction=0.3)))
    assert [c.id for _, c in out] == [r.id for r in records]
    assert {name for name, _ in out} == {"train", "val", "eval"}
