#!/usr/bin/env python3
"""PII benchmark corpus: seeded support-desk conversations with planted personal data and truth.

An evaluation set for the PII stage (engine/data/stages/pii.py) written independently of its
detectors and of scripts/make_noisy_data.py: values come from Faker in ten locales and from
libphonenumber, carrier sentences and look-alike text from scripts/pii_corpus_text.py, the US
street suffixes and unit designators from USPS Publication 28 (scripts/pub28_tables.py).

Each record is {"id", "messages": [{"role", "content"}…], "planted": [{"turn", "start", "end",
"type", "text", "group"}…], "clean": bool}; [start, end) indexes messages[turn]["content"] and
is asserted exact while building. `group` names the locale and format of the value ("US
NATIONAL", "DE typed slash", "US C1 abbr +unit +city", "faker fr_FR address 2 lines", "pt_BR
reversed"…); phones also carry "e164", US Publication 28 addresses "c1" (the C1 primary
name of their suffix). About half the records are clean: no personal data, but
order/ticket/tracking numbers, dates, prices, versions, SKUs, IMEIs, product and company names.

What is planted:
  phone    valid (phonenumbers.is_valid_number) fixed-line/mobile numbers of US, GB, DE, FR, IN
           and BR in E164, INTERNATIONAL, NATIONAL and RFC3966 (the span is the number after
           "tel:"), as people type them (US extensions "x12" / " ext. 12", dots, dashes, no
           separators, "00" and "+cc (0)" prefixes, "030/1234567"…), and Faker's phone_number()
           per locale, redrawn until valid
  address  one US address per USPS C1 street suffix row at least, primary name and standard
           abbreviation, with or without a C2 unit, with city/state/ZIP on the same line (in the
           span) or on the next line (not in the span); Faker street_address()/address() for
           en_US (military APO/FPO/DPO forms redrawn), en_GB, de_DE and fr_FR, written on one
           line, or on two lines with only the street line in the span
  person   Faker first and last names (ten locales) in free text with no column, signature or
           greeting announcing them; "Last, First"; a title and a last name ("Ms. Okafor")
  email    Faker email(), free_email(), company_email()
  card     Faker credit_card_number() for visa, mastercard, amex, discover; compact, spaced, dashed
  iban     Faker iban() in seven locales; compact and in groups of four

    python scripts/pii_corpus.py OUT.jsonl --seed 7 --records 4000

`judge` says how a detector's spans cover a planted span (scripts/bench_pii.py, the tests).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers as pn
from faker import Faker
from phonenumbers import PhoneNumberFormat as Fmt
from phonenumbers import PhoneNumberType as PType


def _sibling(name: str) -> Any:
    """A module next to this file, imported by path (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


text = _sibling("pii_corpus_text")
pub28 = _sibling("pub28_tables")

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "pt_BR", "en_IN")
NAME_LOCALES = LOCALES + ("es_ES", "it_IT", "nl_NL", "pl_PL")
IBAN_LOCALES = ("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "pl_PL")
ADDRESS_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR")
REGIONS = {"US": "en_US", "GB": "en_GB", "DE": "de_DE", "FR": "fr_FR", "IN": "en_IN", "BR": "pt_BR"}
TYPE_WEIGHTS = {"phone": 30, "address": 30, "person": 20, "email": 7, "card": 7, "iban": 6}
_PERSONAL = (PType.FIXED_LINE, PType.MOBILE, PType.FIXED_LINE_OR_MOBILE)
_NSN_LENGTHS = {"DE": (9, 10, 11)}  # libphonenumber allows 5-15 digits; people have 9-11
_STREET_WORDS = ("Main", "Oak", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park",
                 "Sunset", "Highland", "Mill", "River", "Church", "Spring", "Willow", "Old Mill",
                 "Martin Luther King Jr", "Fox Run", "Prospect", "Franklin", "Lincoln", "Bay")
_ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "12th", "21st", "42nd", "103rd", "First", "Second",
             "Third", "Fifth", "Tenth")
_DIRECTIONS = ("N", "S", "E", "W", "NE", "NW", "SE", "SW", "North", "South", "East", "West", "N.")
_REVERSED_OK = ("{v} is the account holder.", "The name on the order should read {v}.",
                "the order is under {v}, not me.", "the receipt says the buyer was {v}",
                "the warranty is registered to {v}")


@dataclass
class Item:
    """One planted value: the span, the text right before and after it (no PII), its group."""

    type: str
    span: str
    group: str
    after: str = ""
    before: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Generator:
    """Seeded PII values per type; `item(type)` returns one `Item`."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers: dict[str, Any] = {}
        for k, loc in enumerate(sorted(set(NAME_LOCALES + IBAN_LOCALES))):
            self.fakers[loc] = Faker(loc)
            self.fakers[loc].seed_instance(seed * 1000 + k)
        self.slots = text.Slots(self.rng, self.fakers)
        # US addresses walk the C1 table: every row once (half of them abbreviated), then every
        # row again in the other form, in a new order; then the same walk again
        rows = list(pub28.C1_STREET_SUFFIXES)
        self.rng.shuffle(rows)
        first = [(p, a, i % 2 == 1) for i, (p, a) in enumerate(rows)]
        second = [(p, a, not abbr) for p, a, abbr in first]
        self.rng.shuffle(second)
        self._c1: list[tuple[str, str, bool]] = first + second  # (primary, abbr, use abbr)
        self._c1_next = 0

    def item(self, kind: str) -> Item:
        return getattr(self, f"_{kind}")()

    # ------------------------------------------------------------------------------ phones
    def _number(self, region: str) -> pn.PhoneNumber:
        md = pn.PhoneMetadata.metadata_for_region(region)
        while True:
            desc = self.rng.choice((md.fixed_line, md.mobile))
            lengths = [n for n in desc.possible_length if n in _NSN_LENGTHS.get(region, (n,))]
            if not lengths:
                continue
            size = self.rng.choice(lengths)
            nsn = str(self.rng.randint(1, 9))
            nsn += "".join(str(self.rng.randrange(10)) for _ in range(size - 1))
            num = pn.PhoneNumber(country_code=md.country_code, national_number=int(nsn))
            if pn.is_valid_number(num) and pn.number_type(num) in _PERSONAL:
                return num

    def _typed(self, region: str, num: pn.PhoneNumber) -> tuple[str, str]:
        """(style, text): how a customer types `num`."""
        r = self.rng
        cc = str(num.country_code)
        parts = re.findall(r"\d+", pn.format_number(num, Fmt.INTERNATIONAL))[1:]
        nat = re.findall(r"\d+", pn.format_number(num, Fmt.NATIONAL))
        nsn = "".join(parts)
        styles: dict[str, str] = {
            "typed +cc-dashes": f"+{cc}-" + "-".join(parts),
            "typed +cc compact": f"+{cc} {nsn}" if r.random() < 0.5 else f"+{cc}{nsn}",
            "typed national compact": "".join(nat),
            "typed national dashes": "-".join(nat),
        }
        if region != "US":
            styles["typed 00cc"] = f"00{cc} " + " ".join(parts)
        if region in ("GB", "DE", "FR"):
            styles["typed +cc (0)"] = f"+{cc} (0)" + " ".join(parts)
            styles["typed (area)"] = f"({nat[0]}) " + " ".join(nat[1:])
        if region in ("US", "FR"):
            styles["typed dots"] = ".".join(nat)
        if region == "DE":
            styles["typed slash"] = f"{nat[0]}/" + "".join(nat[1:])
        if region == "BR":
            styles["typed +55 (ddd)"] = f"+55 ({nat[0]}) " + "-".join(nat[1:])
            styles["typed ddd spaced"] = " ".join(nat)
        if region == "IN":
            styles["typed 0 prefix"] = "0" + nsn
            styles["typed 10 digits"] = nsn
        if region == "US":
            a, b, c = nat
            ext = str(r.randint(1, 99999))[: r.randint(1, 5)]
            styles.update({
                "typed x-ext": r.choice((f"{a}-{b}-{c}x{ext}", f"({a}){b}-{c}x{ext}",
                                         f"001-{a}-{b}-{c}x{ext}", f"+1-{a}-{b}-{c}x{ext}",
                                         f"{a}.{b}.{c}x{ext}")),
                "typed ext.": r.choice((f"{a}-{b}-{c} ext. {ext}", f"{a}-{b}-{c} ext {ext}",
                                        f"({a}) {b}-{c} ext. {ext}", f"{a}-{b}-{c} Ext. {ext}")),
                "typed 1-area": f"1-{a}-{b}-{c}", "typed +1 (area)": f"+1 ({a}) {b}-{c}",
                "typed spaces": f"{a} {b} {c}", "typed (area) no space": f"({a}){b}-{c}",
            })
        style = r.choice(sorted(styles))
        return style, styles[style]

    def _faker_phone(self, region: str) -> tuple[str, pn.PhoneNumber]:
        fk = self.fakers[REGIONS[region]]
        while True:
            s = fk.phone_number()
            probe = "+" + s[2:] if s.startswith("00") else s
            try:
                num = pn.parse(probe, region)
            except pn.NumberParseException:
                continue
            if pn.is_valid_number(num):
                return s, num

    def _phone(self) -> Item:
        region = self.rng.choice(sorted(REGIONS))
        pick = self.rng.random()
        before = ""
        if pick < 0.2:
            value, num = self._faker_phone(region)
            style = "faker"
        else:
            num = self._number(region)
            if pick < 0.5:
                style = self.rng.choice(("E164", "INTERNATIONAL", "NATIONAL", "RFC3966"))
                value = pn.format_number(num, getattr(Fmt, style))
                if style == "RFC3966":  # the URI scheme is written, the number is the span
                    before, value = "tel:", value.removeprefix("tel:")
            else:
                style, value = self._typed(region, num)
        assert str(num.national_number) in re.sub(r"\D", "", value), (value, num)
        return Item("phone", value, f"{region} {style}", before=before,
                    extra={"e164": pn.format_number(num, Fmt.E164)})

    # --------------------------------------------------------------------------- addresses
    def _suffix(self, primary: str, abbr: str, use_abbr: bool) -> str:
        r = self.rng
        if use_abbr:
            form = r.choices(("title", "upper", "dot"), (6, 2, 2))[0]
            word = abbr.title() if form != "upper" else abbr
            return word + "." if form == "dot" and abbr != primary else word
        word = pub28.COMMON_SPELLINGS.get(primary, primary) if r.random() < 0.5 else primary
        return word if r.random() < 0.15 else word.title()

    def _unit(self) -> str:
        r = self.rng
        rng_value = r.choice((str(r.randint(1, 40)), str(r.randint(100, 2400)),
                              f"{r.randint(1, 30)}{r.choice('ABCDEF')}", r.choice("ABCDEFGH")))
        if r.random() < 0.15:
            return r.choice(("#", "# ")) + rng_value
        name, abbr, needs_range = r.choice(pub28.C2_SECONDARY_UNITS)
        word = r.choice((name.title(), abbr.title(), abbr,
                         abbr.title() + "." if abbr != name else name.title()))
        return f"{word} {rng_value}" if needs_range else word

    def _us_c1(self) -> Item:
        r, fk = self.rng, self.fakers["en_US"]
        primary, abbr, use_abbr = self._c1[self._c1_next % len(self._c1)]
        self._c1_next += 1
        number = str(r.choice((r.randint(1, 99), r.randint(100, 999), r.randint(1000, 9999),
                               r.randint(10000, 99999))))
        if r.random() < 0.05:
            number += r.choice("AB")
        name = r.choice((r.choice(_STREET_WORDS), fk.last_name(), r.choice(_ORDINALS),
                         fk.first_name()))
        street = f"{number} {name} {self._suffix(primary, abbr, use_abbr)}"
        if r.random() < 0.2:
            street = f"{number} {r.choice(_DIRECTIONS)} {street.split(' ', 1)[1]}"
        elif r.random() < 0.08:
            street += " " + r.choice(("N", "S", "E", "W", "NW", "SE"))
        group = "US C1 " + ("abbr" if use_abbr else "primary")
        if r.random() < 0.5:
            street += r.choice((" ", ", ")) + self._unit()
            group += " +unit"
        zipcode = fk.zipcode_plus4() if r.random() < 0.25 else fk.zipcode()
        city = f"{fk.city()}, {fk.state_abbr()} {zipcode}"
        where = r.random()
        after = ""
        if where < 0.35:
            street += ", " + city if r.random() < 0.8 else " " + city.replace(",", "")
            group += " +city"
        elif where < 0.5:
            after = "\n" + city
            group += " +city 2nd line"
        if r.random() < 0.1:
            street, after = street.upper(), after.upper()
            group += " CAPS"
        return Item("address", street, group, after=after, extra={"c1": primary})

    def _address(self) -> Item:
        if self.rng.random() < 0.6:
            return self._us_c1()
        loc = self.rng.choice(ADDRESS_LOCALES)
        fk = self.fakers[loc]
        kind = self.rng.choice(("street_address", "address"))
        while True:
            value = getattr(fk, kind)()
            if not re.search(r"\b[AFD]PO\b", value):  # en_US military forms: not street addresses
                break
        lines = value.split("\n")
        if kind == "address" and loc != "en_GB" and self.rng.random() < 0.5:
            return Item("address", lines[0], f"faker {loc} address 2 lines",
                        after="\n" + "\n".join(lines[1:]))
        return Item("address", ", ".join(lines), f"faker {loc} {kind}")

    # ------------------------------------------------------------------ names, mail, cards
    def _person(self) -> Item:
        r = self.rng
        loc = r.choice(NAME_LOCALES)
        fk = self.fakers[loc]
        first, last = fk.first_name(), fk.last_name()
        form = r.choices(("full", "reversed", "title"), (7, 1, 2))[0]
        if form == "reversed":
            return Item("person", f"{last}, {first}", f"{loc} reversed",
                        extra={"template": r.choice(_REVERSED_OK)})
        if form == "title":
            title = r.choice(text.TITLES)
            span = f"{first} {last}" if title.startswith("Dr") and r.random() < 0.4 else last
            return Item("person", span, f"{loc} title", extra={"title": title})
        return Item("person", f"{first} {last}", f"{loc} full")

    def _email(self) -> Item:
        fk = self.fakers[self.rng.choice(LOCALES)]
        kind = self.rng.choice(("email", "free_email", "company_email"))
        return Item("email", getattr(fk, kind)(), kind)

    def _card(self) -> Item:
        brand = self.rng.choice(("visa", "mastercard", "amex", "discover"))
        digits = self.fakers["en_US"].credit_card_number(brand)
        assert luhn_ok(digits), digits
        layout = self.rng.choice(("compact", "spaces", "dashes"))
        if layout == "compact":
            return Item("card", digits, f"{brand} compact")
        cuts = (4, 10) if len(digits) == 15 else tuple(range(4, len(digits), 4))  # amex 4-6-5
        groups = [digits[a:b] for a, b in zip((0,) + cuts, cuts + (len(digits),), strict=True)]
        return Item("card", (" " if layout == "spaces" else "-").join(groups), f"{brand} {layout}")

    def _iban(self) -> Item:
        loc = self.rng.choice(IBAN_LOCALES)
        value = self.fakers[loc].iban()
        assert iban_ok(value), value
        if self.rng.random() < 0.5:
            return Item("iban", value, f"{value[:2]} compact")
        grouped = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
        return Item("iban", grouped, f"{value[:2]} groups of 4")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    s = value.replace(" ", "").upper()
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


# ------------------------------------------------------------------------------- assembly
def _carrier(gen: Generator, item: Item, role: str) -> tuple[str, str]:
    """The carrier sentence for `item` in a `role` turn: the text before and after the value."""
    r = gen.rng
    if role == "assistant":
        tpl = r.choice(text.AGENT[item.type])
    elif item.type == "person":
        if "template" in item.extra:
            tpl = item.extra["template"]
        elif "title" in item.extra:
            tpl = r.choice(text.TITLED).replace("{title}", item.extra["title"])
        else:
            tpl = r.choice(text.PERSON)
    elif item.type == "address" and item.after and r.random() < 0.5:
        tpl = r.choice(text.ADDRESS_BLOCK)
    else:
        tpl = r.choice(getattr(text, item.type.upper()))
    pre, post = tpl.split("{v}")
    return gen.slots.fill(pre), gen.slots.fill(post)


def record(gen: Generator, index: int, clean: bool) -> dict[str, Any]:
    """One conversation (2-6 turns, user first); PII records carry 1-3 planted items."""
    r = gen.rng
    roles = ["user" if t % 2 == 0 else "assistant" for t in range(r.randint(2, 6))]
    pieces: list[list[Any]] = [[] for _ in roles]  # per turn: strings and (before, after, Item)
    if not clean:
        kinds = r.choices(sorted(TYPE_WEIGHTS), [TYPE_WEIGHTS[k] for k in sorted(TYPE_WEIGHTS)],
                          k=r.choices((1, 2, 3), (6, 3, 1))[0])
        for kind in kinds:
            item = gen.item(kind)
            special = {"template", "title"} & set(item.extra)  # reversed or titled names
            agent_ok = kind in text.AGENT and not item.after and not special
            turns = [t for t, role in enumerate(roles)
                     if role == "user" or (agent_ok and r.random() < 0.25)]
            turn = r.choice(turns)
            pieces[turn].append((*_carrier(gen, item, roles[turn]), item))
    messages, planted = [], []
    for t, role in enumerate(roles):
        parts = pieces[t]
        for _ in range(r.randint(0, 1) if parts else 1):
            parts.insert(r.randint(0, len(parts)), gen.slots.clean_turn(role))
        if t == 0 and r.random() < 0.3:
            parts.insert(0, r.choice(text.GREETING))
        if role == "assistant" and r.random() < 0.15:
            parts.append(gen.slots.fill(r.choice(text.SIGNOFF)))
        sep = "\n" if r.random() < 0.2 else " "
        content = ""
        for part in parts:
            if content:  # a sentence that ends on a value gets a full stop or a line break
                content += sep if not content[-1].isalnum() else r.choice(("." + sep, "\n"))
            if isinstance(part, str):
                content += part
                continue
            pre, post, item = part
            start = len(content) + len(pre) + len(item.before)
            content += pre + item.before + item.span + item.after + post
            planted.append({"turn": t, "start": start, "end": start + len(item.span),
                            "type": item.type, "text": item.span, "group": item.group,
                            **{k: v for k, v in item.extra.items() if k in ("e164", "c1")}})
        messages.append({"role": role, "content": content})
    for p in planted:
        assert messages[p["turn"]]["content"][p["start"]:p["end"]] == p["text"], p
    return {"id": f"r{index:06d}", "messages": messages, "planted": planted, "clean": clean}


def build(records: int, seed: int = 7) -> list[dict[str, Any]]:
    """`records` conversations, about half of them clean; the same arguments, the same corpus."""
    gen = Generator(seed)
    return [record(gen, i, clean=gen.rng.random() < 0.5) for i in range(records)]


def judge(content: str, start: int, end: int, spans: list[tuple[int, int]]) -> str:
    """"full" when every letter and digit of content[start:end] lies inside `spans`, "partial"
    when some do, "missed" when none do (spaces and punctuation inside or around are ignored)."""
    want = [i for i in range(start, end) if content[i].isalnum()]
    hit = sum(1 for i in want if any(s <= i < e for s, e in spans))
    return "full" if hit == len(want) else "partial" if hit else "missed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="JSONL file to write")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--records", type=int, default=4000)
    args = ap.parse_args(argv)
    with args.out.open("w", encoding="utf-8") as fh:
        for rec in build(args.records, args.seed):
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
