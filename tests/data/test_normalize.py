"""Tests for the normalize stage: unicode, whitespace, HTML e-mail bodies, mojibake repair."""

from __future__ import annotations

from collections import Counter

import pytest

from engine.config import NormalizeSpec
from engine.data.stages.normalize import (NormalizeStats, fix_mojibake, normalize,
                                          normalize_conversation, normalize_text)
from engine.records import Conversation, SourceRef


def conv(cid: str, *turns: tuple[str, str]) -> Conversation:
    return Conversation(id=cid, messages=[{"role": r, "content": c} for r, c in turns],
                        source=SourceRef("t.jsonl", 1, cid.upper()))


def test_normalize_text_whitespace_and_unicode() -> None:
    spec = NormalizeSpec()
    assert normalize_text("  Hello\u00a0\u00a0 there!\t\tHow  are you?  ", spec) == "Hello there! How are you?"
    assert normalize_text("line one  \r\n   line two\r\rline three", spec) == "line one\nline two\n\nline three"
    assert normalize_text("a\n\n\n\n\nb\n \n\t\nc", spec) == "a\n\nb\n\nc"
    assert normalize_text("ＡＢＣ１２３ ﬁle", spec) == "ABC123 file"         # NFKC folds width/ligatures
    assert normalize_text("bell\x07 and\x00 nul", spec) == "bell and nul"
    assert normalize_text("\ufeffI \u200bbought \u200bit, re\u00adfund", spec) == "I bought it, refund"
    family = "👩\u200d👩\u200d👧 and می\u200cخواهم"  # ZWJ / ZWNJ carry meaning: kept
    assert normalize_text(family, spec) == family
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
    assert stats.fixes == Counter()


@pytest.mark.parametrize("broken, fixed", [
    ("I donâ€™t see the â€œResetâ€\x9d button", "I don’t see the “Reset” button"),
    ("Mit freundlichen GrÃ¼ÃŸen, JÃ¼rgen", "Mit freundlichen Grüßen, Jürgen"),
    ("Refund of 49 â‚¬ for the cafÃ© order", "Refund of 49 € for the café order"),
    ("ma commande nâ€™est pas arrivÃ©e", "ma commande n’est pas arrivée"),
    ("Ð—Ð°ÐºÐ°Ð· 4821 Ð½Ðµ Ð¿Ñ€Ð¸ÑˆÑ‘Ð»", "Заказ 4821 не пришёл"),
    ("router log: \x1b[31mERROR\x1b[0m link down", "router log: ERROR link down"),
])
def test_fix_mojibake_repairs_misdecoded_text(broken: str, fixed: str) -> None:
    assert fix_mojibake(broken) == fixed
    spec = NormalizeSpec(unicode_form="NFC")
    assert normalize_text(broken, spec) == fixed
    assert normalize_text(broken, NormalizeSpec(unicode_form="NFC", fix_mojibake=False)) != fixed


@pytest.mark.parametrize("text", [
    "“Smart quotes” don’t change – nor do dashes — or ellipses…",
    "Grüße aus München, naïve café, São Paulo, Ação, Ñandú, Łódź, Øresund",
    "Москва, Αθήνα, 東京の注文, 서울, עברית, العربية, हिन्दी",
    "emoji stay: 👍🏽 🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f ❤️",
    "ASCII only: a < b, 5 > 3, AT&T, <EMAIL>, C:\\Users\\jane",
    "NÃO FUNCIONA, MINHA IRMÃ E EU EM SÃO PAULO; ÇA VA? ÀÁÂÃÄÅ",  # capitals that look suspicious
    "Preço: R$ 49,90 – não chegou",
])
def test_fix_mojibake_leaves_correct_text_alone(text: str) -> None:
    assert fix_mojibake(text) == text
    assert normalize_text(text, NormalizeSpec(unicode_form="NFC", collapse_whitespace=False)) == text


def test_strip_html_email_body() -> None:
    html = ("<html><head><style>p{color:red}</style></head><body><div>Hi team,</div><div><br></div>"
            "<p>My order&nbsp;#4821 arrived <b>damaged</b> &amp; the plug is cracked.</p>"
            "<ul><li>SP-2210 smart plug</li><li>X200 router</li></ul>"
            "<p>Best regards,<br>Ana Ruiz</p></body></html>")
    out = normalize_text(html, NormalizeSpec())
    assert out == ("Hi team,\n\nMy order #4821 arrived damaged & the plug is cracked.\n\n"
                   "- SP-2210 smart plug\n\n- X200 router\n\nBest regards,\nAna Ruiz")
    fixes: Counter = Counter()
    kept = normalize_text(html, NormalizeSpec(strip_html=False), fixes)
    assert "<b>damaged</b>" in kept and fixes == Counter()


def test_strip_html_leaves_plain_text_with_angle_brackets() -> None:
    for text in ("Speed < 5 Mbps and ping > 200 ms", "Write to <EMAIL> or call <PHONE>",
                 "Use the <Reset> button, then a<b"):
        assert normalize_text(text, NormalizeSpec()) == text


def test_html_runs_before_mojibake_and_counts_fixes() -> None:
    stats = NormalizeStats()
    records = [conv("h", ("user", "<p>I donâ€™t get any <i>wifi</i></p>"),
                    ("assistant", "Sorry to hear that! Let’s check the router.")),
               conv("m", ("user", "GrÃ¼ÃŸe"), ("assistant", "Hallo!"))]
    out = list(normalize(records, NormalizeSpec(), stats))
    assert out[0].messages[0]["content"] == "I don’t get any wifi"
    assert out[0].messages[1] == records[0].messages[1]
    assert out[1].messages[0]["content"] == "Grüße"
    assert stats.fixes == Counter(html=1, mojibake=2)
    assert stats.changed == 2


def test_normalize_conversation_keeps_extra_keys_and_hints() -> None:
    c = Conversation(id="x", messages=[{"role": "user", "content": " hi ", "name": "jane"}],
                     source=SourceRef("f", 3), meta={"channel": "email"}, hints={"names": ["Jane"]})
    out, dropped = normalize_conversation(c, NormalizeSpec())
    assert dropped == 0 and out.messages == [{"role": "user", "content": "hi", "name": "jane"}]
    assert out.meta == {"channel": "email"} and out.hints == {"names": ["Jane"]}
