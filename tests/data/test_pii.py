"""Tests for PII detection, consistent surrogates and the encrypted vault."""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
from collections import Counter
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from engine.config import PiiSpec
from engine.data.stages.pii import (TYPES, Finding, PiiStats, Surrogates, detect, iban_ok, luhn_ok,
                                    redact, redact_text)
from engine.data.vault import load_key, read_vault, vault_aad, write_vault
from engine.errors import StudioError
from engine.records import Conversation, SourceRef

FIXTURES = Path(__file__).parent / "fixtures" / "pii"
PLAIN = PiiSpec(surrogates=False)


def conv(cid: str, *turns: tuple[str, str], names: list[str] | None = None) -> Conversation:
    return Conversation(id=cid, messages=[{"role": r, "content": c} for r, c in turns],
                        source=SourceRef("t.jsonl", 1, cid), hints={"names": names or []})


def found(text: str, spec: PiiSpec = PiiSpec(), names: list[str] | None = None) -> list[tuple[str, str]]:
    """(type, surface) of every finding in a one-turn conversation."""
    c = conv("x", ("user", text), names=names)
    return [(f.type, text[f.start:f.end]) for f in detect(c, spec)]


def load_fixture() -> list[Conversation]:
    out = []
    with open(FIXTURES / "tickets.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            d = json.loads(line)
            out.append(Conversation(d["id"], d["messages"], SourceRef("tickets.jsonl", i, d["id"]),
                                    hints={"names": d["names"]}))
    return out


# ------------------------------------------------------------------------------ plain tokens
@pytest.mark.parametrize("text, expected", [
    ("Email jane.doe@example.com or JOHN+tix@Mail.Example.CO.UK.", "Email <EMAIL> or <EMAIL>."),
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
     "short 555 1234, refund $1234567890, ip <IP>"),
    ("3-5 business days, 24 hours, order 7781", "3-5 business days, 24 hours, order 7781"),
    ("refund to DE89 3704 0044 0532 0130 00 please", "refund to <IBAN> please"),
    ("Ship to 221B Baker Street, London NW1 6XE.", "Ship to <ADDRESS>."),
])
def test_redact_text_plain_tokens(text: str, expected: str) -> None:
    assert redact_text(text, PLAIN)[0] == expected


def test_counts_per_type_and_switches() -> None:
    text = ("a@b.io, c@d.org, +44 20 7946 0958, 4111 1111 1111 1111, 1234 5678 9012 3456, "
            "GB29 NWBK 6016 1331 9268 19, 203.0.113.9, 12 Oak Lane")
    out, counts = redact_text(text, PLAIN)
    assert out == "<EMAIL>, <EMAIL>, <PHONE>, <CARD>, 1234 5678 9012 3456, <IBAN>, <IP>, <ADDRESS>"
    assert counts == Counter(email=2, phone=1, card=1, iban=1, ip=1, address=1)
    off = PiiSpec(surrogates=False, emails=False, cards=False, ibans=False, ips=False, addresses=False)
    text = text.replace("GB29 NWBK 6016 1331 9268 19", "GB29NWBK60161331926819")
    out, counts = redact_text(text, off)
    assert out == text.replace("+44 20 7946 0958", "<PHONE>")
    assert counts == Counter(phone=1)
    nothing = PiiSpec(emails=False, phones=False, cards=False, ibans=False, ips=False,
                      addresses=False, names=False)
    c = conv("n", ("user", "Hi Anna,\n" + text), names=["Anna Keller"])
    assert detect(c, nothing) == []


def test_luhn_and_iban_checks() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("5500000000000004") and luhn_ok("378282246310005")
    assert not luhn_ok("1234567890123456") and not luhn_ok("4111111111111112")
    for iban in ("DE89370400440532013000", "GB29NWBK60161331926819", "FR1420041010050500013M02606",
                 "NL91ABNA0417164300", "CH9300762011623852957", "NO9386011117947", "BE68539007547034",
                 "es91 2100 0418 4502 0005 1332"):
        assert iban_ok(iban), iban
    assert not iban_ok("DE89370400440532013001")  # check digits off
    assert not iban_ok("DE8937040044053201300")   # one character short for DE
    assert not iban_ok("ZZ89370400440532013000")  # no such country


# ----------------------------------------------------------------------------- positives
@pytest.mark.parametrize("surface", [
    "+44 20 7946 0958", "+49 (0)30 1234567", "0049 30 1234567", "+33 1 23 45 67 89",
    "(555) 123-4567", "+1-555-123-4567", "555.123.4567", "07700 900123", "+1 (415) 555-0100",
    "030 12345678", "+41 44 668 18 00", "+39 06 6982 0000",
])
def test_phone_formats(surface: str) -> None:
    assert found(f"Please call me on {surface}, thanks.") == [("phone", surface)]
    assert found(f"{surface}") == [("phone", surface)]


@pytest.mark.parametrize("text, kind, surface", [
    ("mail Jane.Doe+orders@mail.example.co.uk now", "email", "Jane.Doe+orders@mail.example.co.uk"),
    ("card 5500-0000-0000-0004 declined", "card", "5500-0000-0000-0004"),
    ("Amex 378282246310005.", "card", "378282246310005"),
    ("IBAN: GB29 NWBK 6016 1331 9268 19.", "iban", "GB29 NWBK 6016 1331 9268 19"),
    ("IBAN FR1420041010050500013M02606, thanks", "iban", "FR1420041010050500013M02606"),
    ("to NL91 ABNA 0417 1643 00 (ABN)", "iban", "NL91 ABNA 0417 1643 00"),
    ("IBAN CH93 0076 2011 6238 5295 7", "iban", "CH93 0076 2011 6238 5295 7"),
    ("WAN address 203.0.113.42.", "ip", "203.0.113.42"),
    ("my PC is 192.168.1.57 on the LAN", "ip", "192.168.1.57"),
    ("v6 2001:db8:85a3::8a2e:370:7334 assigned", "ip", "2001:db8:85a3::8a2e:370:7334"),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ip", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("link-local fe80::1c2b:3dff:fe4e:5f6a here", "ip", "fe80::1c2b:3dff:fe4e:5f6a"),
    ("mapped ::ffff:198.51.100.7 seen", "ip", "::ffff:198.51.100.7"),
    ("iban de89 3704 0044 0532 0130 00 (typed in lower case)", "iban", "de89 3704 0044 0532 0130 00"),
    ("toll-free 1-800-555-0199.", "phone", "1-800-555-0199"),
])
def test_positives(text: str, kind: str, surface: str) -> None:
    assert found(text) == [(kind, surface)]


@pytest.mark.parametrize("surface", [
    "221B Baker Street",
    "221B Baker Street, London NW1 6XE",
    "1600 Pennsylvania Avenue NW, Washington, DC 20500",
    "742 Evergreen Terrace, Apt 4B, Springfield, IL 62704",
    "Flat 3, 27 Old Gloucester Street, London WC1N 3AX",
    "350 5th Avenue, New York, NY 10118",
    "12 Main St",
    "4 Privet Drive",
    "1729 Orchard Drive, Austin, TX 78701",  # "…hard Drive" is not a disk
    "88 Harbour Rd, Suite 200",
    "9 Elm Ct",
    "1500 Sunset Blvd",
    "17 Kings Way",
    "3 Abbey Lane",
    "10 Market Pl",
    "Hauptstraße 5, 10115 Berlin",
    "Berliner Straße 12a",
    "Karl-Marx-Allee 90",
    "Lindenstr. 7",
    "Am Sonnenweg 3, 80331 München",
    "Goetheplatz 4",
    "Bahnhofstrasse 21, 8001 Zürich",
    "12 rue de la Paix, 75002 Paris",
    "8 avenue des Champs-Élysées",
    "15 boulevard Saint-Michel, 75005 Paris",
    "3 bis rue Victor Hugo, 69002 Lyon",
    # particles and initials inside German street names, town names of several words
    "Hans-J.-Hahn-Ring 12",
    "Sandra-van der Dussen-Straße 7/8",
    "Drubring 67/76, 23303 Bad Langensalza",
    "Carlos-Klapp-Straße 1, 46047 Büsingen am Hochrhein",
    # a French street without a house number, its word in lower case
    "boulevard Margot Clerc",
    "avenue de Gallet",
])
def test_address_formats(surface: str) -> None:
    assert found(f"Please send it to {surface}. Thanks!") == [("address", surface)]


@pytest.mark.parametrize("text, surface", [
    ("the invoice still shows boulevard Caroline Collet, which is wrong", "boulevard Caroline Collet"),
    ("IMEI is locked. boulevard Agathe Simon\n08503 Leduc-la-Forêt\nThat's where I live.",
     "boulevard Agathe Simon\n08503 Leduc-la-Forêt"),
])
def test_french_street_without_number_no_cue(text: str, surface: str) -> None:
    assert found(text) == [("address", surface)]


# ----------------------------------------------------------------------------- negatives
@pytest.mark.parametrize("text", [
    "Order #482913 shipped on 2024-03-05 at 14:30.",
    "Your order 4471 9920 3318 is on its way.",
    "Order number: 5512 3390 2281 7",
    "Serial number 4471 9920 3318; S/N: 4471-9920-3318; serial BW-4471-9920-33.",
    "Tracking number 9400 1000 0000 0000 0000 00 and tracking 1Z999AA10123456784.",
    "Tracking no.: 4111 1111 1111 1111",
    "The price is $1,299.00 (was €1.499,00), or 3 payments of £433.00.",
    "Update to v2.10.3 or firmware 1.2.3.4; build 10.0.19045.3693; version 4.2.0.17.",
    "Firmware was 3.0.9 and the app is 5.12.1; the Hub Mini 2.4.1.0 has a fix.",
    "Default gateway 192.168.1.1, DNS 8.8.8.8 and 1.1.1.1, mask 255.255.255.0, localhost 127.0.0.1, ::1",
    "Octets too large: 256.300.1.1, and 1.2.3.4.5 is not an address.",
    "Times 10:30:45 and 14:30, MAC 00:1A:2B:3C:4D:5E, ratio 16:9.",
    "Delivery 05.03.2024 or 2024-03-05 or 03/05/2024, invoice INV-2024-000123.",
    "Postcode SW1A 1AA and 10115 alone are not addresses.",
    "The Street was flooded so the courier took another Road.",
    "I walked down Main Street to the store.",
    "We sell 3 Brightwave Hub Mini units and 2 Smart Plugs.",
    "Hold the button for 10 seconds, wait 3-5 business days, 24 hours, 12 Volt.",
    "Ref DE89 3704 0044 0532 0130 01 has a wrong check digit.",
    "The Brightwave Hub Mini and Brightwave Thermostat Pro work with Brightwave Home.",
    "Thanks,\nBrightwave Support",
    "Kind regards,\nThe Brightwave Home Team",
    "Hi there,\nthe Spring 2024 update broke it.",
    "Hey Google, turn on the lights.",
    "Dear Customer Service,\nmy device is broken.",
    "Hi, Quick Question: does the Hub Mini support Zigbee?",
    "Hello Team Lead: see ticket.",
    "short 555 1234 and 12345678",
    "We have 2 Google Drive accounts and 1 USB Drive.",
])
def test_hard_negatives_are_kept(text: str) -> None:
    c = conv("neg", ("user", text))
    assert detect(c, PiiSpec()) == []
    assert redact_text(text, PiiSpec())[0] == text


# --------------------------------------------------------------------------------- persons
def test_names_from_hints_signatures_and_greetings() -> None:
    c = conv("p",
             ("user", "Hi, I'm Anna Keller. My Brightwave Hub Mini is offline.\n\nBest regards,\nAnna"),
             ("assistant", "Hi Anna,\nsorry about that! Ms. Keller, please reboot it.\n\nCheers,\nTom Becker"),
             ("user", "Thanks Tom, Keller here again: works now."),
             names=["Anna Keller"])
    out, counts = Surrogates().apply(c, detect(c, PiiSpec()))
    assert [m["content"] for m in out.messages] == [
        "Hi, I'm <PERSON_1>. My Brightwave Hub Mini is offline.\n\nBest regards,\n<PERSON_1>",
        "Hi <PERSON_1>,\nsorry about that! Ms. <PERSON_1>, please reboot it.\n\nCheers,\n<PERSON_2>",
        "Thanks <PERSON_2>, <PERSON_1> here again: works now.",
    ]
    assert counts == Counter(person=7)


@pytest.mark.parametrize("text, names, expected", [
    ("Dear Mr. Smith,\nyour refund is on its way, Mr. Smith.", [],
     "Dear Mr. <PERSON_1>,\nyour refund is on its way, Mr. <PERSON_1>."),
    ("Dear Ms. Novak:\nNovak, your refund is on its way.", [],
     "Dear Ms. <PERSON_1>:\n<PERSON_1>, your refund is on its way."),
    ("Hello Marco Rossi,\nMarco, the Brightwave Hub Mini ships today.", [],
     "Hello <PERSON_1>,\n<PERSON_1>, the Brightwave Hub Mini ships today."),
    ("Thanks,\nMarco Rossi", [], "Thanks,\n<PERSON_1>"),
    ("Thanks, Marco", [], "Thanks, <PERSON_1>"),
    ("Mit freundlichen Grüßen\nPetra Schmidt", [], "Mit freundlichen Grüßen\n<PERSON_1>"),
    ("Sincerely,\nJ. Okafor", [], "Sincerely,\n<PERSON_1>"),
    ("Hallo Herr Müller,\nHerr Müller, danke.", [], "Hallo Herr <PERSON_1>,\nHerr <PERSON_1>, danke."),
    ("Bonjour Claire,\nmerci Claire Dubois.", ["Dubois, Claire"],
     "Bonjour <PERSON_1>,\nmerci <PERSON_1>."),
    ("SARAH wrote; Sarah O'Neil said O'Neil is fine.", ["SARAH O'NEIL"],
     "SARAH wrote; <PERSON_1> said <PERSON_1> is fine."),
    ("Li Wei called; Li is a short part, Wei too.", ["Li Wei"],
     "<PERSON_1> called; Li is a short part, <PERSON_1> too."),
    ("Annabelle and Anna-Lena are not Anna; anna is lower case.", ["Anna Keller"],
     "Annabelle and Anna-Lena are not <PERSON_1>; anna is lower case."),
])
def test_person_cases(text: str, names: list[str], expected: str) -> None:
    c = conv("p", ("user", text), names=names)
    assert Surrogates().apply(c, detect(c, PiiSpec()))[0].messages[0]["content"] == expected


def test_product_and_company_names_never_become_person() -> None:
    c = conv("p",
             ("user", "Hi Brightwave team,\nmy Brightwave Hub Mini and Thermostat Pro are offline."),
             ("assistant", "Hi Anna,\nthe Brightwave Hub Mini needs firmware 2.1.\n\nKind regards,\n"
                           "Brightwave Support"),
             names=["Anna Keller"])
    text = " ".join(m["content"] for m in Surrogates().apply(c, detect(c, PiiSpec()))[0].messages)
    assert text.count("Brightwave") == 4 and "Hub Mini" in text and "Thermostat Pro" in text
    assert [f.value for f in detect(c, PiiSpec())] == ["Anna Keller"]


def test_placeholder_hint_names_are_ignored() -> None:
    c = conv("p", ("user", "Unknown error N/A on the Brightwave Hub. Test passed."),
             names=["N/A", "unknown", "-", "", "Test User", "12345"])
    assert detect(c, PiiSpec()) == []


def test_names_are_per_conversation() -> None:
    a = conv("a", ("user", "Hi Anna,\nok"), names=["Anna Keller"])
    b = conv("b", ("user", "Anna Karenina is a novel."))
    hints_only = PiiSpec(names_in_text=False)
    assert [f.type for f in detect(a, hints_only)] == ["person"]
    assert detect(b, hints_only) == []  # Anna Keller's hint stays in conversation a


def test_overlaps_longest_then_rank() -> None:
    text = ("Anna.Keller@example.com lives at 12 Keller Street; IBAN DE89 3704 0044 0532 0130 00; "
            "Keller agreed. Card 4111 1111 1111 1111. Office: 5 Main St, Springfield, IL 62704-1234")
    assert found(text, names=["Anna Keller"]) == [
        ("email", "Anna.Keller@example.com"), ("address", "12 Keller Street"),
        ("iban", "DE89 3704 0044 0532 0130 00"), ("person", "Keller"),
        ("card", "4111 1111 1111 1111"), ("address", "5 Main St, Springfield, IL 62704-1234")]


# ------------------------------------------------------------------------------ surrogates
def test_surrogates_consistent_across_turns_and_conversations() -> None:
    s = Surrogates()
    a = conv("a", ("user", "Mail JANE@example.com or call +49 30 1234567."),
             ("assistant", "Noted jane@example.com and 0049 30 1234567; card 4111 1111 1111 1111?"))
    b = conv("b", ("user", "New: bob@example.org, old: Jane@Example.com, +49 (0)30 1234567, "
                           "4111-1111-1111-1111, IP 203.0.113.5"))
    out_a, counts_a = s.apply(a, detect(a, PiiSpec()))
    out_b, counts_b = s.apply(b, detect(b, PiiSpec()))
    assert [m["content"] for m in out_a.messages] == [
        "Mail <EMAIL_1> or call <PHONE_1>.", "Noted <EMAIL_1> and <PHONE_1>; card <CARD_1>?"]
    assert out_b.messages[0]["content"] == "New: <EMAIL_2>, old: <EMAIL_1>, <PHONE_1>, <CARD_1>, IP <IP_1>"
    assert counts_a == Counter(email=2, phone=2, card=1)
    assert counts_b == Counter(email=2, phone=1, card=1, ip=1)
    assert s.mapping == {
        "<EMAIL_1>": ["JANE@example.com", "jane@example.com", "Jane@Example.com"],
        "<PHONE_1>": ["+49 30 1234567", "0049 30 1234567", "+49 (0)30 1234567"],
        "<CARD_1>": ["4111 1111 1111 1111", "4111-1111-1111-1111"],
        "<EMAIL_2>": ["bob@example.org"], "<IP_1>": ["203.0.113.5"]}
    assert a.messages[0]["content"].startswith("Mail JANE@")  # input not mutated


def test_surrogates_off_and_discard_keep_no_mapping() -> None:
    c = conv("a", ("user", "Hi Anna,\nmail a@x.io or b@x.io"), names=["Anna Keller"])
    s = Surrogates.for_spec(PiiSpec(surrogates=False))
    out, _ = s.apply(c, detect(c, PiiSpec()))
    assert out.messages[0]["content"] == "Hi <PERSON>,\nmail <EMAIL> or <EMAIL>"
    assert s.mapping == {}  # vault: discard (the default) keeps nothing
    s = Surrogates.for_spec(PiiSpec(surrogates=False, vault="encrypted"))
    s.apply(c, detect(c, PiiSpec()))
    assert s.mapping == {"<PERSON>": ["Anna"], "<EMAIL>": ["a@x.io", "b@x.io"]}


def test_fixture_tickets_end_to_end() -> None:
    stats, s = PiiStats(), Surrogates(keep_originals=True)
    out = {c.id: [m["content"] for m in c.messages]
           for c in redact(load_fixture(), PiiSpec(), stats, s)}
    expected = json.loads((FIXTURES / "tickets.expected.json").read_text(encoding="utf-8"))
    assert out == expected
    assert stats.totals == Counter(person=17, phone=7, address=5, email=3, ip=2, card=1, iban=1)
    assert stats.records_redacted == 6 and set(stats.totals) == set(TYPES)
    assert stats.per_record["BW-5002"] == {"card": 1, "iban": 1, "person": 4}
    assert s.mapping["<ADDRESS_3>"] == ["12 rue de la Paix, 75002 Paris", "12 rue de la Paix"]
    assert s.mapping["<PERSON_3>"] == ["Marco Rossi", "Marco", "Rossi"]


def test_findings_are_frozen_and_picklable() -> None:
    c = load_fixture()[0]
    findings = detect(c, PiiSpec())
    assert findings and all(isinstance(f, Finding) for f in findings)
    assert pickle.loads(pickle.dumps(findings)) == findings
    assert findings == sorted(findings, key=lambda f: (f.turn, f.start))
    with pytest.raises(FrozenInstanceError):
        findings[0].start = 0  # type: ignore[misc]
    assert detect(c, PiiSpec()) == findings  # pure: same input, same findings


# --------------------------------------------------------------- planted values, generated
FIRST = ["Anna", "Marco", "Sarah", "Jonas", "Priya", "Lukas", "Chloé", "Mateo", "Hannah", "Omar"]
LAST = ["Keller", "Rossi", "O'Neil", "Schmidt", "Okafor", "Dubois", "Novak", "Fischer", "Lindqvist"]
STREETS = ["Baker Street", "Oak Lane", "Harbour Road", "Maple Avenue", "Sunset Blvd", "Kings Way"]
STRASSEN = ["Hauptstraße", "Lindenweg", "Goetheplatz", "Karl-Marx-Allee", "Berliner Straße"]
RUES = ["rue de la Paix", "avenue Victor Hugo", "boulevard Saint-Michel", "place de la Bourse"]


def _luhn_card(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    check = next(d for d in "0123456789" if luhn_ok(body + d))
    return body + check


def _iban(rng: random.Random, country: str, length: int, letters: int) -> str:
    bban = ("".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(letters))
            + "".join(str(rng.randrange(10)) for _ in range(length - 4 - letters)))
    num = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    return f"{country}{98 - num % 97:02d}{bban}"


def _ticket(rng: random.Random, i: int) -> tuple[Conversation, list[str], list[str]]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    email = f"{first.lower()}.{last.lower().replace(chr(39), '')}{i}@example.com"
    phone = rng.choice([f"+44 20 7946 {rng.randrange(1000, 9999)}",
                        f"({rng.randrange(200, 999)}) {rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}",
                        f"+49 (0)30 {rng.randrange(1000000, 9999999)}",
                        f"07700 {rng.randrange(100000, 999999)}",
                        f"+33 1 {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}"])
    card = _luhn_card(rng, rng.choice(["4", "51", "37"]), 16)
    card = " ".join(card[k:k + 4] for k in range(0, 16, 4)) if rng.random() < 0.5 else card
    iban = _iban(rng, *rng.choice([("DE", 22, 0), ("GB", 22, 4), ("NL", 18, 4), ("FR", 27, 0)]))
    iban = " ".join(iban[k:k + 4] for k in range(0, len(iban), 4)) if rng.random() < 0.5 else iban
    ip = f"203.0.113.{rng.randrange(2, 250)}"
    address = rng.choice([
        f"{rng.randrange(1, 999)} {rng.choice(STREETS)}",
        f"{rng.choice(STRASSEN)} {rng.randrange(1, 99)}, {rng.randrange(10000, 99999)} Berlin",
        f"{rng.randrange(1, 99)} {rng.choice(RUES)}, 750{rng.randrange(10, 20)} Paris",
        f"Flat {rng.randrange(1, 30)}, {rng.randrange(1, 99)} {rng.choice(STREETS)}, London SW1A 2AA",
    ])
    order = f"#{rng.randrange(100000, 999999)}"
    price = f"${rng.randrange(10, 999)}.{rng.randrange(10, 99)}"
    version = f"v{rng.randrange(1, 9)}.{rng.randrange(0, 20)}.{rng.randrange(0, 9)}"
    c = conv(f"G-{i}",
             ("user", f"Hi, my Brightwave Hub Mini (firmware {version}) is offline since the update. "
                      f"Order {order}, paid {price} with card {card}. Reach me at {email} or {phone}. "
                      f"My router's public IP is {ip}.\n\nThanks,\n{first} {last}"),
             ("assistant", f"Hi {first},\nsorry about that! I've refunded {price} for order {order}. "
                           f"Please confirm the delivery address."),
             ("user", f"It's {address}. For the refund use IBAN {iban}. {last} is on the door."),
             ("assistant", f"Thanks {first}, all set. Order {order} will ship on 2024-03-05."))
    planted = [email, phone, card, iban, ip, address, first, last, f"{first} {last}"]
    kept = [order, price, version, "2024-03-05", "Brightwave Hub Mini"]
    return c, planted, kept


def test_generated_tickets_leak_no_planted_value() -> None:
    rng = random.Random(20240305)
    tickets = [_ticket(rng, i) for i in range(300)]
    stats, s = PiiStats(), Surrogates()
    outputs = list(redact([t[0] for t in tickets], PiiSpec(), stats, s))
    for (_, planted, kept), out in zip(tickets, outputs):
        text = "\n".join(m["content"] for m in out.messages)
        for value in planted:
            assert value not in text, (out.id, value)
        for value in kept:
            assert value in text, (out.id, value)
    assert stats.records_redacted == 300
    assert set(stats.totals) == {"email", "phone", "card", "iban", "ip", "address", "person"}
    assert stats.totals["card"] == stats.totals["iban"] == stats.totals["ip"] == 300
    # numbering follows first appearance: one EMAIL per ticket (distinct addresses)
    assert len([k for k in s.mapping if k.startswith("<EMAIL_")]) == 300


# ----------------------------------------------------------------------------------- vault
@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> bytes:
    key = os.urandom(32)
    monkeypatch.setenv("STUDIO_VAULT_KEY", base64.b64encode(key).decode())
    return key


def test_vault_round_trip(tmp_path: Path, key_env: bytes) -> None:
    spec = PiiSpec(vault="encrypted")
    key = load_key(spec)
    assert key == key_env
    mapping = {"<EMAIL_1>": ["jane@example.com", "JANE@example.com"], "<PERSON_1>": ["Zoë Ñúñez"]}
    aad = vault_aad("support", 3, "acme")
    path = write_vault(tmp_path / "v3" / "pii.vault", mapping, key, aad)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["pii.vault"]  # no temp file left
    raw = path.read_bytes()
    assert b"jane" not in raw and "Zoë".encode() not in raw and aad in raw
    assert read_vault(path, key, aad) == mapping
    again = write_vault(path, mapping, key, aad).read_bytes()
    assert again != raw  # a fresh random nonce every time


def test_vault_wrong_key_tamper_and_other_version(tmp_path: Path, key_env: bytes) -> None:
    aad = vault_aad("support", 1, "acme")
    path = write_vault(tmp_path / "pii.vault", {"<IP_1>": ["203.0.113.4"]}, key_env, aad)
    with pytest.raises(StudioError, match="vault cannot be decrypted") as err:
        read_vault(path, os.urandom(32), aad)
    assert "203.0.113" not in str(err.value)
    with pytest.raises(StudioError, match="vault cannot be decrypted"):
        read_vault(path, key_env, vault_aad("support", 2, "acme"))
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(StudioError, match="vault cannot be decrypted"):
        read_vault(path, key_env, aad)
    (tmp_path / "junk").write_bytes(b"not a vault")
    with pytest.raises(StudioError, match="vault cannot be decrypted"):
        read_vault(tmp_path / "junk", key_env, aad)


def test_vault_key_missing_or_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PiiSpec(vault="encrypted", vault_key_env="ACME_PII_KEY")
    monkeypatch.delenv("ACME_PII_KEY", raising=False)
    with pytest.raises(StudioError) as err:
        load_key(spec)
    assert "ACME_PII_KEY" in str(err.value) and "os.urandom(32)" in (err.value.hint or "")
    assert err.value.where == "refine.pii.vault_key_env"
    # a non-ASCII value of a base64 key's length, as the bytes the shell would pass: os.environ
    # could not even hold "é" where the locale's encoding is ASCII (LC_ALL=C with PYTHONUTF8=0)
    non_ascii = os.fsdecode("é".encode() * 44)
    for bad in ("not-a-key", base64.b64encode(os.urandom(16)).decode(), non_ascii):
        monkeypatch.setenv("ACME_PII_KEY", bad)
        with pytest.raises(StudioError, match="ACME_PII_KEY does not hold a 32-byte key") as err:
            load_key(spec)
        assert bad not in str(err.value)
    key = os.urandom(32)
    monkeypatch.setenv("ACME_PII_KEY", key.hex())
    assert load_key(spec) == key
    monkeypatch.setenv("ACME_PII_KEY", base64.urlsafe_b64encode(key).decode() + "\n")
    assert load_key(spec) == key
