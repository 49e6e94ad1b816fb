"""Tests for the quality gate and the language detector it uses."""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path

import pytest

from engine.config import QualitySpec
from engine.data.stages import language
from engine.data.stages.quality import (alpha_ratio, check, duplicate_line_share, gate,
                                        mash_share, repeated_trigram_share)
from engine.records import Conversation, Reject, SourceRef

FIXTURES = Path(__file__).parent / "fixtures"


def conv(cid: str, *turns: tuple[str, str]) -> Conversation:
    return Conversation(id=cid, messages=[{"role": r, "content": c} for r, c in turns],
                        source=SourceRef("t.jsonl", 1, cid.upper()))


def chat(*texts: str) -> Conversation:
    """user/assistant alternating, starting with the user."""
    return conv("c", *((("user", "assistant")[i % 2], t) for i, t in enumerate(texts)))


# Realistic, clean support conversations: none of them may trip any check.
GOOD = [
    chat("where is my order 4821?",
         "Your order 4821 shipped yesterday with UPS, tracking 1Z999AA10123456784. Is there anything "
         "else I can help you with today?",
         "no thanks",
         "Great! Is there anything else I can help you with today? If not, have a nice day."),
    chat("My Brightwave thermostat shows error E4 after the firmware update last night, what does it mean?",
         "Error E4 after the firmware update means the temperature sensor lost its calibration. Please "
         "hold the reset button for ten seconds; the thermostat then recalibrates the sensor automatically."),
    chat("The X200 keeps rebooting. Log from the app:\n2026-03-03 10:02:11 WAN link down\n"
         "2026-03-03 10:02:15 WAN link up\n2026-03-03 10:05:40 reboot (watchdog)",
         "Thanks for the log. The watchdog reboot after the WAN flaps points to the modem, not the "
         "router. Please check that the cable between the modem and the X200's WAN port clicks in, "
         "and tell me if the reboots continue."),
    chat("How do I reset the C300 camera?",
         "To reset the C300:\n1. Open the Brightwave app.\n2. Tap Devices, then tap the C300.\n"
         "3. Tap Settings, then tap Reset.\n4. Wait until the LED blinks blue.\n5. Tap Done.\n"
         "If the LED is red, the camera has no power. If the LED is orange, the camera has no wifi. "
         "If the LED is blue, the camera is ready to pair."),
    chat("ok", "Great, thanks!"),
    chat("48213?", "Ok."),
    chat("hmmm", "Is something wrong with the hub?"),
    chat("The dhcp server on my router hands out no address, mqtt from the hub also fails.",
         "Please check the property 'DHCP range' in the router settings and restart the hub."),
    chat("48213", "Thanks, I found ticket 48213. The refund of $49.00 was issued on 2026-03-03."),
    chat("Mein Thermostat zeigt seit dem Update den Fehler E4 an.",
         "Bitte trennen Sie das Thermostat für 30 Sekunden vom Strom und starten Sie es neu."),
    chat("Bonjour, ma commande 4821 n'est jamais arrivée.", "Je suis désolée, je vous renvoie le colis aujourd'hui."),
    chat("注文4821がまだ届いていません。", "ご迷惑をおかけして申し訳ありません。本日再送いたします。"),
    chat("see https://brightwave.example/support/articles/12345-reset-your-x200-router?utm_source=email"
         "&utm_campaign=march",
         "Yes, that article is right: hold the reset button for ten seconds."),
]
_THREADS = FIXTURES / "turns" / "threads.jsonl"
GOOD += [Conversation(id=c["id"], messages=c["expected"], source=SourceRef("threads.jsonl", 1))
         for c in map(json.loads, _THREADS.read_text(encoding="utf-8").splitlines())
         if c["expected"] and c["expected"][-1]["role"] == "assistant"]


@pytest.mark.parametrize("good", GOOD, ids=[f"good{i}" for i in range(len(GOOD))])
def test_normal_support_conversations_pass(good: Conversation) -> None:
    assert check(good, QualitySpec()) is None
    texts = [m["content"] for m in good.messages if m["role"] != "system"]
    assert alpha_ratio("\n".join(texts)) > 0.5
    assert duplicate_line_share(texts) < 0.2 and repeated_trigram_share(texts) < 0.3


def test_echo_sessions_are_rejected() -> None:
    """A widget test session where the "agent" repeats the visitor teaches nothing."""
    echo = chat("test test 123 asdf", "Test test 123  asdf")
    assert check(echo, QualitySpec()) == ("echo", "1 assistant turns, each repeating a customer turn")
    answered = chat("test test 123 asdf", "Hello! This is Brightwave support, how can I help?")
    assert check(answered, QualitySpec()) is None


def test_shape_reasons_in_order() -> None:
    ok = conv("ok", ("system", "s"), ("user", "Where is my order?"), ("assistant", "It ships today."))
    cases = {
        "few": conv("few", ("system", "s"), ("user", "Where is my order?")),
        "nouser": conv("nouser", ("assistant", "Hello"), ("assistant", "Anyone there?")),
        "noasst": conv("noasst", ("user", "Hello"), ("user", "Anyone there?")),
        "lastuser": conv("lastuser", ("user", "Hi"), ("assistant", "Hello!"), ("user", "Where is my order?")),
        "empty": conv("empty"),
    }
    spec = QualitySpec()
    assert check(ok, spec) is None
    assert check(cases["few"], spec) == ("too_few_turns", "1 non-system turns, need 2")
    assert check(cases["nouser"], spec) == ("no_user_turn", "2 non-system turns, none from the user")
    assert check(cases["noasst"], spec) == ("no_final_assistant_turn", "no assistant turn")
    assert check(cases["lastuser"], spec) == ("no_final_assistant_turn", "last turn is 'user'")
    assert check(cases["empty"], QualitySpec(min_turns=1))[0] == "too_few_turns"
    assert check(cases["few"], QualitySpec(min_turns=1))[0] == "no_final_assistant_turn"
    out = list(gate([ok, *cases.values()], spec))
    assert out[0] is ok
    rejects = [r for r in out if isinstance(r, Reject)]
    assert [(r.record_id, r.stage, r.reason) for r in rejects] == [
        ("few", "quality", "too_few_turns"), ("nouser", "quality", "no_user_turn"),
        ("noasst", "quality", "no_final_assistant_turn"), ("lastuser", "quality", "no_final_assistant_turn"),
        ("empty", "quality", "too_few_turns"),
    ]
    assert rejects[0].source.id == "FEW"


def test_int_spec_still_works() -> None:
    ok = chat("Where is my order?", "It ships today.")
    few = conv("few", ("user", "Where is my order?"))
    assert check(ok, 2) is None and check(few, 2)[0] == "too_few_turns"
    assert [type(x).__name__ for x in gate([ok, few], 2)] == ["Conversation", "Reject"]


def test_turn_and_size_limits() -> None:
    long_chat = chat(*(f"Is hub {i} online now?" if i % 2 == 0 else f"Hub {i - 1} needs {i} more minutes."
                       for i in range(12)))
    assert check(long_chat, QualitySpec(max_turns=12)) is None
    assert check(long_chat, QualitySpec(max_turns=11)) == ("too_many_turns", "12 non-system turns, max 11")
    short = conv("s", ("system", "You are a helpful assistant for Brightwave."), ("user", "hi"),
                 ("assistant", "hello"))
    assert check(short, QualitySpec(min_chars=8)) == ("too_short", "7 characters, need 8")  # system not counted
    assert check(short, QualitySpec(min_chars=7)) is None
    assert check(short, QualitySpec(max_chars=6)) == ("too_long", "7 characters, max 6")


def _b64(n: int) -> str:
    rng = random.Random(7)
    return base64.b64encode(bytes(rng.randrange(256) for _ in range(n))).decode()


@pytest.mark.parametrize("bad", [
    chat("Here is the attachment", _b64(900)),
    chat("Here is the config backup",
         "\n".join(_b64(900)[i:i + 76] for i in range(0, 1200, 76)), "Thanks, we will check it.", "ok"),
    chat("crash",
         "\n".join(f"2026-03-03T10:02:{i:02d}.123Z E/0x80070005 [{i * 7}] 192.168.1.{i} -> 0x{i * 4099:08x}"
                   f" rc=-{i}" for i in range(20))),
    chat("!!!!!!!!????? ;;;;;; 7868768 ???", "???"),
    chat("asdkjfhaskdjfhaksjdhfkajshdfkjahsdkfjhaksjdhf 9823749 ;;;", "...."),
])
def test_garbage(bad: Conversation) -> None:
    reason, detail = check(bad, QualitySpec())
    assert reason == "garbage"
    assert re.fullmatch(r"letter ratio 0\.\d\d below 0\.25", detail)


@pytest.mark.parametrize("bad", [
    chat("test test 123 asdf sdfsdf sdfsdf", "hjkl hjkl hjkl"),
    chat("qwertyuiop jjjjjkkkkklll qwertyuiop", "qwertyuiop"),
    chat("asdfjkl;asdfjkl", "asdfjkl;asdfjkl"),
    chat("zxcvbnm,./", "hjkl hjkl hjkl"),
    chat("aaaaaaaaaaaa", "test test 123 asdf"),
])
def test_keyboard_mashing_is_garbage(bad: Conversation) -> None:
    reason, detail = check(bad, QualitySpec())
    assert reason == "garbage"
    assert re.fullmatch(r"keyboard mashing (0\.\d\d|1\.00) of the letters, above 0\.5", detail)


def test_mash_share_spares_real_words() -> None:
    text = ("The dhcp lease renews, mqtt and smtp work, the property manager wrote html and www "
            "settings down; der Wert ist falsch; papa says hmmm; Mississippi; bookkeeper; sss")
    assert mash_share(text) == pytest.approx(20 / 130)  # only dhcp, mqtt, smtp, html, hmmm
    assert mash_share("property Wert papa Mississippi bookkeeper coffee typewriter") == 0.0
    assert mash_share("hmmm ok") == 0.0  # too little to judge
    assert mash_share("HTML DHCP MQTT SMTP LTE") == 0.0  # capitals: acronyms, not mashing


@pytest.mark.parametrize("bad", [
    chat("help", "\n".join(["Sorry, I didn't get that. Could you rephrase?"] * 4)),
    chat("help", "Sorry, I didn't get that.", "router broken", "Sorry, I didn't get that.",
         "ROUTER BROKEN", "Sorry, I didn't get that."),
    chat("lol " * 40, "Is there anything else I can help with?"),
    chat("My plug is offline since the update and the app says device unreachable. " * 3,
         "Please unplug it for ten seconds."),
])
def test_repetitive(bad: Conversation) -> None:
    reason, detail = check(bad, QualitySpec())
    assert reason == "repetitive"
    assert re.fullmatch(r"repeated (lines|3-grams) (0|1)\.\d\d above 0\.5", detail)
    assert check(bad, QualitySpec(max_repetition=1.0)) is None


def test_repetition_measures() -> None:
    assert duplicate_line_share(["a\nb", "c"]) == 0.0  # fewer than 4 lines: not judged
    assert duplicate_line_share(["abcd\nxy", "ABCD\nxy"]) == pytest.approx(6 / 12)
    assert repeated_trigram_share(["one two three " * 10]) == 1.0
    words = " ".join(f"w{i}" for i in range(40))
    assert repeated_trigram_share([words, words]) == 0.0  # repeats across turns are normal


def test_wrong_language() -> None:
    spec = QualitySpec(languages=["en"])
    de = chat("Mein Thermostat zeigt seit dem Update den Fehler E4 an und heizt nicht mehr.",
              "Bitte trennen Sie das Thermostat für 30 Sekunden vom Strom und starten Sie es neu.")
    en = chat("My thermostat shows error E4 since the update and does not heat anymore.",
              "Please unplug the thermostat for 30 seconds and start it again.")
    reason, detail = check(de, spec)
    assert reason == "wrong_language" and re.fullmatch(r"detected 'de' \(p [01]\.\d\d\), allowed en", detail)
    assert check(en, spec) is None
    assert check(de, QualitySpec(languages=["en", "de"])) is None
    assert check(de, QualitySpec()) is None  # no languages configured: every language passes
    # too short to tell: never a wrong language
    assert check(chat("Danke", "Gern geschehen!"), spec) is None
    assert check(chat("48213?", "Ok."), spec) is None


def test_language_detect() -> None:
    assert language.detect("Hi, my router keeps dropping the wifi every evening. Can you help?")[0] == "en"
    assert language.detect("Hallo, mein Router verliert jeden Abend die WLAN-Verbindung.")[0] == "de"
    assert language.detect("Bonjour, mon thermostat ne se connecte plus au wifi depuis hier soir.")[0] == "fr"
    assert language.detect("Hola, mi termostato no se conecta al wifi desde anoche. ¿Me pueden ayudar?")[0] == "es"
    assert language.detect("注文4821がまだ届いていません。本日再送してください。")[0] == "ja"
    code, prob = language.detect("My order 4821 has not arrived yet, can you check the tracking?")
    assert code == "en" and 0.5 <= prob <= 1.0
    for short in ("ok", "Thanks!", "Danke", "order 48213", "", "12345 67890 !!!", "asdfgh jkl"):
        assert language.detect(short) == ("und", 0.0)
    text = "Je voudrais un remboursement pour la prise connectée cassée, s'il vous plaît."
    assert language.detect(text) == language.detect(text)


def test_language_accepted_and_codes() -> None:
    assert language.accepted("und", ["en"])
    assert language.accepted("en", ["en", "de"]) and not language.accepted("fr", ["en", "de"])
    assert language.accepted("bs", ["hr"]) and language.accepted("nn", ["nb"])
    assert language.accepted("id", ["ms"]) and not language.accepted("sr", ["sl"])
    labels = set(language._model().labels) - {"zxx"}
    assert labels <= language.LANGUAGES and language.LANGUAGES - labels == {"nb"}


def test_quality_spec_validation() -> None:
    assert QualitySpec(languages=["EN", "de-DE", "pt_BR", "en"]).languages == ["en", "de", "pt"]
    for bad in (["english"], ["eng"], ["xx"], [""]):
        with pytest.raises(ValueError, match="not a language code"):
            QualitySpec(languages=bad)
    with pytest.raises(ValueError, match="min_turns"):
        QualitySpec(min_turns=5, max_turns=3)
    with pytest.raises(ValueError, match="min_chars"):
        QualitySpec(min_chars=50, max_chars=10)


def test_reject_details_never_contain_text() -> None:
    secret = "Jane Doe at 12 Elm Street"
    bad = [chat(f"{secret} " * 20, "ok"), chat(secret), chat(f"{secret} " + "!!!!!!!!!! " * 8, "#####"),
           chat(f"{secret}, mein Thermostat ist seit gestern kaputt und zeigt nur noch Fehler an.", "Oh nein.")]
    rejects = [r for r in gate(bad, QualitySpec(languages=["fr"])) if isinstance(r, Reject)]
    assert len(rejects) == 4
    for r in rejects:
        assert not any(word in r.detail for word in ("Jane", "Doe", "Elm", "Street", "Thermostat"))
