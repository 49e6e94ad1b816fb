"""Tests for engine.data.card_html: a real refine's card rendered offline, every count shown, escaping."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.data.card_html import fmt_num, histogram, render_card_html, stage_order
from engine.data.refine import refine
from engine.registry import Registry
from engine.workspace import Workspace

FIXTURES = Path(__file__).parent / "fixtures"
CONFIG = """\
kind: refine
tenant: brightwave
seed: 11
refine:
  dataset: support
  system_prompt: "You are Brightwave Home's support assistant."
  inputs:
    - path: data/support_tickets.jsonl
      format: openai_jsonl
    - path: data/tickets.csv
      format: csv_tickets
      columns: {id: ticket_id, transcript: transcript, meta: [channel, product]}
    - path: data/pairs.tsv
      format: csv_tickets
      columns: {id: id, customer: customer, agent: agent, meta: [queue]}
  split: {val_fraction: 0.2, eval_fraction: 0.3}
"""
XSS = "<script>alert('thermostat')</script>"
EXAMPLES = [
    {"reason": "too_few_turns", "stage": "quality",
     "source": {"file": "pairs.tsv", "line": 3, "id": "P-3"},
     "messages": [{"role": "user", "content": f"My Brightwave thermostat shows {XSS} & resets"}]},
    {"reason": "exact_duplicate", "stage": "dedup",
     "source": {"file": "support_tickets.jsonl", "line": 4, "id": "T-1004"},
     "messages": [{"role": "user", "content": "Router drops wifi, call me at <PHONE>."},
                  {"role": "assistant", "content": "Ticket opened for your router \"BW-R2\"."}]},
    {"reason": "bad_json", "stage": "ingest", "source": {"file": "support_tickets.jsonl", "line": 3},
     "messages": []},
]
# Anything that could make the page fetch something; none of it may appear.
RESOURCE_TAGS = {"script", "link", "img", "iframe", "frame", "object", "embed", "audio", "video",
                 "source", "track", "base", "form", "input", "image", "use", "picture", "portal"}
URL_ATTRS = {"src", "href", "xlink:href", "action", "formaction", "srcset", "poster", "data",
             "background", "manifest", "ping", "cite", "longdesc", "codebase"}


class Page(HTMLParser):
    """Collects tags, attributes, text per element id, style text and all visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str | None] = []
        self.by_id: dict[str, list[str]] = {}
        self.text: list[str] = []
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in {"meta", "br", "hr", "line", "path", "circle"}:
            return
        self.stack.append(dict(attrs).get("id"))
        if self.stack[-1]:
            self.by_id[self.stack[-1]] = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if self.stack and tag not in {"meta", "br", "hr", "line", "path", "circle"}:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.tags and self.tags[-1][0] == "style":
            self.styles.append(data)
        for ident in self.stack:
            if ident:
                self.by_id[ident].append(data)

    def id_text(self, ident: str) -> str:
        return " ".join(" ".join(self.by_id[ident]).split())

    def cells(self, ident: str) -> list[str]:
        return self.id_text(ident).split()


def leaves(value: dict[str, Any]) -> list[tuple[str, Any]]:
    """(key, scalar) for every scalar leaf of nested dicts."""
    out = []
    for k, v in value.items():
        out.extend(leaves(v) if isinstance(v, dict) else [(k, v)] if not isinstance(v, list) else [])
    return out


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def assert_offline(html: str, page: Page) -> None:
    lowered = html.lower()
    for needle in ("http://", "https://", "url(", "@import", "<script", "<link", "<img"):
        assert needle not in lowered, needle
    assert not {t for t, _ in page.tags} & RESOURCE_TAGS
    for tag, attrs in page.tags:
        assert not set(attrs) & URL_ATTRS, (tag, attrs)
        for name, value in attrs.items():
            assert "//" not in (value or ""), (tag, name, value)
            assert not name.startswith("on"), (tag, name)  # no inline event handlers
    assert "url(" not in " ".join(page.styles) and "@import" not in " ".join(page.styles)
    csp = [a.get("content") for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'"]


@pytest.fixture
def refined(tmp_path: Path, workspace: Workspace, registry: Registry) -> tuple[dict[str, Any], list[int]]:
    shutil.copytree(FIXTURES, tmp_path / "data", dirs_exist_ok=True)
    (tmp_path / "refine.yaml").write_text(CONFIG, encoding="utf-8")
    result = refine(load_config(tmp_path / "refine.yaml"), workspace, registry)
    card = json.loads((result.path / "card.json").read_text(encoding="utf-8"))
    lengths = []
    for split in ("train", "val", "eval"):
        for line in (result.path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            lengths.append(sum(len(m["content"]) for m in json.loads(line)["messages"]))
    return card, lengths


def test_card_of_a_real_refine_shows_every_count(refined: tuple[dict[str, Any], list[int]]) -> None:
    card, lengths = refined
    html = render_card_html(card, examples=EXAMPLES, lengths=lengths, length_unit="characters")
    page = parse(html)
    assert_offline(html, page)

    counts = card["counts"]
    kept = counts["train"] + counts["val"] + counts["eval"]
    assert counts["input_records"] > kept > 0 and counts["rejected"] > 0  # a realistic card
    assert page.id_text("count-input_records") == str(counts["input_records"])
    assert page.id_text("count-rejected") == str(counts["rejected"])
    assert page.id_text("count-kept") == str(kept)
    for split in ("train", "val", "eval"):
        assert page.id_text(f"count-{split}") == str(counts[split])

    stages = card["stages"]
    funnel_rows = [i for i in page.by_id if i.startswith("stage-")]
    assert funnel_rows == [f"stage-{s}" for s in stage_order(stages)]
    assert funnel_rows[0] == "stage-ingest" and funnel_rows[-1] == "stage-split" and len(stages) >= 5
    for name, info in stages.items():
        cells = page.cells(f"stage-{name}")
        assert cells[:4] == [name, str(info["in"]), str(info["out"]), str(info["rejected"])], cells
        for key, value in leaves({k: v for k, v in info.items() if k not in ("in", "out", "rejected")}):
            assert f"{key} {fmt_num(value)}" in page.id_text(f"stage-{name}")  # added, turns_dropped…

    for reason, n in card["rejects"].items():
        assert page.cells(f"reject-{reason}") == [reason, str(n)]
    by_stage = page.id_text("rejects-by-stage")
    for stage, reasons in card["rejects_by_stage"].items():
        assert f"{stage} ({sum(reasons.values())})" in by_stage
        for reason, n in reasons.items():
            assert f"{reason} {n}" in by_stage

    assert card["pii"]["email"] > 0 and card["pii"]["phone"] > 0
    for kind, n in card["pii"].items():
        assert page.cells(f"pii-{kind}") == [kind, str(n)]
    assert page.id_text("pii-total") == str(sum(card["pii"].values()))

    inputs = page.id_text("inputs")
    for inp in card["inputs"]:
        row = (f"{inp['file']} {inp['format']} {inp['lines']} {inp['records']} {inp['rejected']} "
               f"{inp['kept']}")
        assert row in inputs, row
        assert inp["sha256"] in inputs

    provenance = page.id_text("provenance")
    assert page.id_text("config-sha256") == card["refine_config_sha256"]
    for name, digest in card["outputs"].items():
        assert f"{name} {digest}" in provenance
    assert json.loads(page.id_text("refine-config")) == card["refine_config"]

    # histogram: one bar per bin, counts add up to the number of kept conversations, unit labelled
    rects = [a for t, a in page.tags if t == "rect"]
    hist = histogram(lengths)
    assert hist is not None and len(rects) == len(hist["bins"])
    assert sum(b["count"] for b in hist["bins"]) == len(lengths) == kept
    assert "characters per conversation" in page.id_text("length-histogram")
    assert page.id_text("length-stats").startswith(f"{kept} conversations")
    assert "Conversation length (characters)" in " ".join(page.text)


def test_examples_are_escaped_text(refined: tuple[dict[str, Any], list[int]]) -> None:
    card, _ = refined
    html = render_card_html(card, examples=EXAMPLES)
    page = parse(html)
    assert_offline(html, page)
    assert "&lt;script&gt;alert(&#39;thermostat&#39;)&lt;/script&gt;" in html
    shown = page.id_text("examples-too_few_turns")
    assert f"My Brightwave thermostat shows {XSS} & resets" in shown
    assert f"too_few_turns ({card['rejects']['too_few_turns']} rejected, 1 shown)" in shown
    assert "quality · pairs.tsv:3 (id P-3)" in shown
    dup = page.id_text("examples-exact_duplicate")
    assert "Router drops wifi, call me at <PHONE>." in dup and 'router "BW-R2"' in dup
    assert "No readable messages" in page.id_text("examples-bad_json")
    # most frequent reason first, then by name
    groups = [i for i in page.by_id if i.startswith("examples-")]
    reasons = sorted({e["reason"] for e in EXAMPLES}, key=lambda r: (-card["rejects"][r], r))
    assert groups == [f"examples-{r}" for r in reasons]


def test_keys_the_template_does_not_know_are_rendered(refined: tuple[dict[str, Any], list[int]]) -> None:
    card, _ = refined
    card["stages"]["turns"] = {"in": 16, "out": 16, "rejected": 0, "merged": 3,
                               "stripped": {"signature": 2, "quoted_reply": 5}}
    card["stages"]["decontam"] = {"in": 11, "out": 10, "rejected": 1}
    card["stages"]["zz_custom"] = {"in": 10, "out": 10, "rejected": 0}
    card["pii"]["iban"] = 2
    card["counts"]["judged"] = 9
    card["dedup"] = {"near_clusters": [{"keep": "rec-a1", "dropped": ["rec-b2", "rec-c3"], "jaccard": 0.82}]}
    card["decontam"] = {"against": ["brightwave-eval.jsonl"], "hits": {"ngram": 1, "near": 0}}
    page = parse(render_card_html(card))

    rows = [i.removeprefix("stage-") for i in page.by_id if i.startswith("stage-")]
    assert rows == stage_order(card["stages"])
    assert rows.index("normalize") < rows.index("turns") < rows.index("pii") < rows.index("quality")
    assert rows.index("dedup") < rows.index("decontam") < rows.index("zz_custom") < rows.index("split")
    assert rows[-1] == "split"
    turns = page.id_text("stage-turns")
    assert turns.startswith("turns 16 16 0") and "merged 3" in turns and "quoted_reply 5" in turns
    assert page.cells("stage-decontam")[:4] == ["decontam", "11", "10", "1"]
    assert page.cells("pii-iban") == ["iban", "2"]
    assert page.id_text("pii-total") == str(sum(card["pii"].values()))
    assert page.id_text("count-judged") == "9"
    dedup = page.id_text("extra-dedup") + " " + " ".join(page.text)
    assert "rec-a1" in dedup and "rec-b2, rec-c3" in dedup and "0.82" in dedup
    assert "brightwave-eval.jsonl" in " ".join(page.text)
    assert "extra-decontam" in page.by_id


def test_pii_residual_table(refined: tuple[dict[str, Any], list[int]]) -> None:
    card, _ = refined
    assert all(v["count"] == 0 and v["passed"] for v in card["pii_residual"].values())
    page = parse(render_card_html(card))
    assert page.cells("residual-email") == ["email", "0", "0", "0", "passed"]
    assert page.cells("residual-person") == ["person", "0", "0", "—", "report", "only"]
    rows = [i for i in page.by_id if i.startswith("residual-")]
    assert rows == [f"residual-{k}" for k in card["pii"]]  # the redaction table's type order

    card["pii_residual"]["person"].update(count=3, records=2)
    card["pii_residual"]["ip"].update(count=1, records=1, passed=False)
    html = render_card_html(card)
    page = parse(html)
    assert page.cells("residual-person") == ["person", "3", "2", "—", "report", "only"]
    assert page.cells("residual-ip") == ["ip", "1", "1", "0", "FAIL"]
    assert '<td class="bad">3</td>' in html
    # a card from before the gate has no residual table; odd shapes still render
    del card["pii_residual"]
    assert 'id="pii-residual"' not in render_card_html(card)
    card["pii_residual"] = {"email": 2, "custom": {"count": 1, "max": None}}
    page = parse(render_card_html(card))
    assert page.cells("residual-email")[:2] == ["email", "2"] and "residual-custom" in page.by_id


def test_minimal_and_odd_cards_render_offline() -> None:
    for card in ({}, {"pii": {"email": {"found": 3}}, "rejects": {}, "stages": {"ingest": 5}},
                 {"inputs": [{"file": "a.csv"}], "outputs": {}, "counts": {"input_records": 0}}):
        html = render_card_html(card, examples=[], lengths=[])
        assert_offline(html, parse(html))
        assert "No length data." in html


def test_histogram_bins() -> None:
    hist = histogram(range(100))
    assert hist is not None
    assert hist["bin_width"] == "5" and len(hist["bins"]) == 20
    assert [b["count"] for b in hist["bins"]] == [5] * 20
    assert (hist["min"], hist["median"], hist["max"], hist["p90"]) == ("0", "49", "99", "89")
    one = histogram([42, 42, 42])
    assert one is not None and [b["count"] for b in one["bins"]] == [3] and one["bin_width"] == "1"
    wide = histogram([1, 250_000])
    assert wide is not None and len(wide["bins"]) <= 26 and wide["bin_width"] == "20,000"
    assert sum(b["count"] for b in wide["bins"]) == 2
    assert histogram([]) is None


def test_stage_order() -> None:
    assert stage_order(["split", "dedup", "ingest", "zeta", "alpha", "turns"]) == [
        "ingest", "turns", "dedup", "alpha", "zeta", "split"]
    assert stage_order(["custom", "pii"]) == ["pii", "custom"]
