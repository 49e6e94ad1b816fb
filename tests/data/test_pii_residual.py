"""Tests for the PII leak gate: the residual scan (placeholders never count), pii.max_residual, the
card section, and a refine that fails with exit 3 when a later stage writes personal data back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import engine.data.refine_passes as refine_passes
from engine.config import PiiSpec, parse_config
from engine.data.card_html import render_card_html
from engine.data.refine import refine
from engine.data.stages import pii
from engine.data.stages.pii_residual import (SHOWN_IDS, Residuals, mask_placeholders,
                                             residual_counts, scan_spec)
from engine.errors import ConfigError, GateFailed, PiiLeak
from engine.records import Conversation, SourceRef
from engine.registry import Registry
from engine.workspace import Workspace
from tests.data.test_refine import CONFIG, dataset_entries, make_config, read_jsonl
from tests.helpers import studio

LEAK = "jane.doe@example.com"
ALL_ON = scan_spec(PiiSpec())


def conv(*texts: str, conv_id: str = "r1", line: int = 1, **hints: Any) -> Conversation:
    roles = ["user", "assistant"] * len(texts)
    return Conversation(id=conv_id, source=SourceRef("in.jsonl", line),
                        messages=[{"role": r, "content": t} for r, t in zip(roles, texts)],
                        hints=dict(hints))


# ----------------------------------------------------------------------------- the scan
def test_placeholders_never_count() -> None:
    numbered = [f"<{t.upper()}_{i}>" for t in pii.TYPES for i in (1, 7, 123456789012)]
    plain = [f"<{t.upper()}>" for t in pii.TYPES]
    texts = [
        " ".join(numbered), "\n".join(plain),
        "Hi <PERSON_1>,\nplease call <PHONE_1> or <PHONE_2>, or mail <EMAIL_3>.\n\nBest regards,\n<PERSON_2>",
        "Card <CARD_1> <CARD_2>, IBAN <IBAN_1>, from <IP_1>.<IP_2> at <ADDRESS_1>, <ADDRESS_2>",
        "<PHONE_1>4111<PHONE_2> 1111<CARD_1>1111 1111",  # digits glued to placeholders
        "Dear <PERSON>,\nyour parcel goes to 12 <ADDRESS> Street",
    ]
    assert residual_counts(conv(*texts), ALL_ON) == {}
    assert mask_placeholders("<EMAIL_12> and <PHONE_3>") == "<EMAIL> and <PHONE>"
    assert mask_placeholders("<ORDER_1> a<b") == "<ORDER_1> a<b"  # not ours: left as it is


def test_real_values_count_next_to_placeholders_with_every_type_on() -> None:
    record = conv(f"Mail <EMAIL_1> or {LEAK}, call +49 30 1234567.",
                  "Your card 4111 1111 1111 1111 and IBAN DE89 3704 0044 0532 0130 00 are noted; "
                  "the login came from 203.0.113.77.\n\nBest regards,\nMaria Lopez")
    found = {"email": 1, "phone": 1, "card": 1, "iban": 1, "ip": 1, "person": 1}
    assert residual_counts(record, ALL_ON) == found
    # the scan spec switches every detector on; the config's switches do not hide a type
    off = PiiSpec(emails=False, phones=False, cards=False, ibans=False, ips=False,
                  addresses=False, names=False)
    assert residual_counts(record, scan_spec(off)) == found
    assert residual_counts(record, off) == {}


def test_in_flight_name_hints_are_not_scanned() -> None:
    """Hints are never written, so the scan only sees the text as written."""
    record = conv("Hello, is my order on its way?", "Yes, Ana Ruiz, it ships today.",
                  names=["Ana Ruiz"])
    hints_only = scan_spec(PiiSpec(names_in_text=False))
    assert pii.detect(record, hints_only)  # the PII stage would have found it through the hint
    assert residual_counts(record, hints_only) == {}
    # with the free-text detector on (the default), the written name itself is a residual
    assert residual_counts(record, ALL_ON) == {"person": 1}


def test_residuals_count_all_keep_bounded_ids_and_report_more() -> None:
    tally = Residuals(PiiSpec(max_residual={"email": 2}))
    for i in range(SHOWN_IDS + 5):
        tally.add(conv(f"write to a{i}@example.com and b{i}@example.com", "ok thanks",
                       conv_id=f"id{i:03d}", line=i + 1))
    tally.add(conv("Best regards,\nMaria Lopez", "Thanks Maria Lopez!", conv_id="p1"))
    summary = tally.summary()
    assert summary["email"] == {"count": 2 * (SHOWN_IDS + 5), "records": SHOWN_IDS + 5, "max": 2,
                                "passed": False,
                                "record_ids": [f"id{i:03d}" for i in range(SHOWN_IDS)]}
    assert summary["person"]["count"] == 2 and summary["person"]["max"] is None
    assert summary["person"]["passed"] and summary["phone"] == {
        "count": 0, "records": 0, "max": 0, "passed": True, "record_ids": []}
    with pytest.raises(PiiLeak) as err:
        tally.check()
    text = str(err.value)
    assert isinstance(err.value, GateFailed) and err.value.exit_code == 3
    assert "email 50 (max 2)" in text and "email: 50 in 25 record(s): id000 (in.jsonl:1)" in text
    assert "id019 (in.jsonl:20) …and 5 more" in text and "id020" not in text
    assert "person 2 (report only)" in text and "phone 0 (max 0)" in text
    assert "example.com" not in text and "Maria" not in text  # ids and locations, never values
    assert "pii.max_residual" in (err.value.hint or "") and "llm.rewrite" in (err.value.hint or "")
    assert err.value.residual == summary


# ------------------------------------------------------------------------------- config
def test_max_residual_defaults_merge_and_follow_the_switches() -> None:
    structured = {"email": 0, "phone": 0, "card": 0, "iban": 0, "ip": 0, "address": 0}
    assert PiiSpec().max_residual.model_dump() == {**structured, "person": None}
    assert PiiSpec(max_residual={"phone": 3, "person": 0}).max_residual.model_dump() == {
        **structured, "phone": 3, "person": 0}
    # a switched-off type is reported, not enforced, unless its max is set explicitly
    off = PiiSpec(emails=False, ips=False, max_residual={"ip": 0})
    assert off.max_residual.model_dump() == {**structured, "email": None, "person": None}
    assert PiiSpec(phones=False, max_residual={"phone": None}).max_residual.phone is None
    # the resolved values survive a round trip through the dumped config (card.json, run dirs)
    assert PiiSpec.model_validate(off.model_dump(mode="json")) == off


@pytest.mark.parametrize("value, message", [
    ("{emial: 0}", "refine.pii.max_residual.emial: unknown key (line 6)"),
    ("{phone: -1}", "refine.pii.max_residual.phone: Input should be greater than or equal to 0 (line 6)"),
    ("{card: 1.5}", "refine.pii.max_residual.card: Input should be a valid integer (line 6)"),
    ("{ip: true}", "refine.pii.max_residual.ip: Input should be a valid integer (line 6)"),
    ("{person: lots}", "refine.pii.max_residual.person: Input should be a valid integer (line 6)"),
    ("3", "refine.pii.max_residual: Input should be a valid dictionary"),
])
def test_bad_max_residual_values_are_config_errors(value: str, message: str) -> None:
    text = ("kind: refine\nrefine:\n  dataset: d\n  inputs: [{path: a.jsonl, format: openai_jsonl}]\n"
            f"  pii:\n    max_residual: {value}\n")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "r.yaml")
    assert f"r.yaml: {message}" in str(err.value)


# ------------------------------------------------------------------------------ refines
def test_a_clean_refine_has_zero_residuals_and_passes(tmp_path: Path, workspace: Workspace,
                                                      registry: Registry) -> None:
    result = refine(make_config(tmp_path), workspace, registry)
    card = json.loads((result.path / "card.json").read_text(encoding="utf-8"))
    assert card["pii"]["email"] > 0 and card["pii"]["phone"] > 0  # there was PII to redact
    assert card["pii_residual"] == {t: {"count": 0, "records": 0, "max": None if t == "person" else 0,
                                        "passed": True, "record_ids": []} for t in pii.TYPES}
    assert result.pii_residual == card["pii_residual"]
    assert "<EMAIL_1>" in (result.path / "train.jsonl").read_text(encoding="utf-8") + \
        (result.path / "eval.jsonl").read_text(encoding="utf-8") + \
        (result.path / "val.jsonl").read_text(encoding="utf-8")
    html = (result.path / "card.html").read_text(encoding="utf-8")
    assert 'id="pii-residual"' in html and 'id="residual-email"' in html


class LeakyRewriter:
    """A rewrite backend that writes an e-mail address back into every reply it rewrites."""

    def generate(self, prompts: list, max_new_tokens: int, batch_size: int, progress: Any = None,
                 label: str = "generate") -> list[str]:
        out = []
        for prompt in prompts:
            reply = prompt[-1]["content"].split("Agent's reply to rewrite:\n", 1)[1]
            reply = reply.rsplit("\n\nWrite only the rewritten reply.", 1)[0]
            out.append(f"{reply} Or mail {LEAK}.")
        return out


LLM_CONFIG = CONFIG + "  llm:\n    model: tiny-rewriter\n    rewrite: {enabled: true}\n"


def test_an_llm_stage_that_writes_pii_back_fails_the_refine_with_exit_3(
        tmp_path: Path, workspace: Workspace, registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_passes, "open_backend", lambda *a, **k: LeakyRewriter())
    # report only first: the refine passes and the card names the rewritten records
    reported = refine(make_config(tmp_path / "a", LLM_CONFIG.replace(
        "  llm:", "  pii: {max_residual: {email: null}}\n  llm:")), workspace, registry)
    leaked = {rec["id"] for split in ("train", "val", "eval")
              for rec in read_jsonl(reported.path / f"{split}.jsonl")
              if LEAK in json.dumps(rec)}
    rewritten = {rec["id"] for split in ("train", "val")
                 for rec in read_jsonl(reported.path / f"{split}.jsonl") if rec["meta"].get("rewritten")}
    assert leaked and leaked == rewritten  # only train/val records the rewrite touched
    email = reported.pii_residual["email"]
    assert (email["count"], email["records"], email["max"], email["passed"]) == (
        len(leaked), len(leaked), None, True)
    assert set(email["record_ids"]) == leaked

    # the default maximum (0) fails the refine: nothing written, nothing registered
    registry_before = registry.list_datasets("acme")
    with pytest.raises(PiiLeak) as err:
        refine(make_config(tmp_path / "b", LLM_CONFIG), workspace, registry)
    assert err.value.exit_code == 3
    text = str(err.value)
    assert f"email {len(leaked)} (max 0)" in text and "no dataset version was written" in text
    assert all(rid in text for rid in leaked) and LEAK not in text
    assert err.value.residual["email"]["passed"] is False
    assert dataset_entries(workspace) == ["v1"]  # the report-only version; no v2, no .partial-*
    assert registry.list_datasets("acme") == registry_before


def test_a_switched_off_type_is_reported_unless_its_max_is_set(
        tmp_path: Path, workspace: Workspace, registry: Registry) -> None:
    off = CONFIG + "  pii: {emails: false}\n"
    result = refine(make_config(tmp_path / "a", off), workspace, registry)
    email = result.pii_residual["email"]
    # 3 written (the stage counted 4 before dedup dropped a record that had one)
    assert email["count"] == 3 and email["max"] is None and email["passed"]
    assert result.pii_residual["phone"]["count"] == 0
    page = render_card_html(json.loads((result.path / "card.json").read_text(encoding="utf-8")))
    assert "report only" in page

    enforced = CONFIG + "  pii: {emails: false, max_residual: {email: 0}}\n"
    with pytest.raises(PiiLeak, match=r"email 3 \(max 0\)"):
        refine(make_config(tmp_path / "b", enforced), workspace, registry)
    assert dataset_entries(workspace) == ["v1"]


class InventingModel:
    """A preference backend whose own answers carry an e-mail address and a phone number."""

    def generate(self, prompts: list, max_new_tokens: int, batch_size: int, progress: Any = None,
                 label: str = "generate") -> list[str]:
        return [f"Mail {LEAK} or call +1 415-555-0199 x12." for _ in prompts]


def test_model_written_preference_answers_are_redacted_and_scanned(
        tmp_path: Path, workspace: Workspace, registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_passes, "open_backend", lambda *a, **k: InventingModel())
    pref = CONFIG + "  llm:\n    model: tiny\n    preferences: {enabled: true}\n"
    result = refine(make_config(tmp_path / "a", pref), workspace, registry)
    rows = read_jsonl(result.path / "preferences.jsonl")
    assert rows
    for row in rows:  # the rejected answer is redacted like the records
        assert row["non_preferred_output"][0]["content"] == "Mail <EMAIL_1> or call <PHONE_1>."
    assert result.pii_residual["email"]["count"] == 0

    # with e-mails switched off the model's addresses are written, and the scan reports them
    off = pref.replace("  llm:", "  pii: {emails: false}\n  llm:")
    reported = refine(make_config(tmp_path / "b", off), workspace, registry)
    rows = read_jsonl(reported.path / "preferences.jsonl")
    email = reported.pii_residual["email"]
    train_ids = {rec["id"] for rec in read_jsonl(reported.path / "train.jsonl")}
    assert email["count"] >= len(rows) > 0 and set(email["record_ids"]) & train_ids


# ---------------------------------------------------------------------------------- CLI
def test_studio_refine_exits_3_names_the_records_and_keeps_nothing(tmp_path: Path) -> None:
    make_config(tmp_path, CONFIG + "  pii: {emails: false, max_residual: {email: 0}}\n")
    env = {"HOME": str(tmp_path / "home"), "STUDIO_CONFIG_DIR": str(tmp_path / "keys"),
           "STUDIO_WORKSPACE": str(tmp_path / "ws")}
    (tmp_path / "home").mkdir()

    res = studio("refine", "refine.yaml", cwd=tmp_path, env=env)
    assert res.returncode == 3, res.stderr
    assert "PII leak gate failed" in res.stderr and "email 3 (max 0)" in res.stderr
    assert "record(s):" in res.stderr and "(support_tickets.jsonl:" in res.stderr
    assert "hint:" in res.stderr and "Traceback" not in res.stderr
    assert "@example" not in res.stderr + res.stdout

    res = studio("refine", "refine.yaml", "--json", cwd=tmp_path, env=env)
    assert res.returncode == 3, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["dataset"], doc["gate"], doc["gate_passed"]) == ("support", "pii_residual", False)
    assert doc["pii_residual"]["email"]["count"] == 3
    assert len(doc["pii_residual"]["email"]["record_ids"]) == doc["pii_residual"]["email"]["records"]
    assert "PII leak gate failed" in res.stderr

    listed = studio("datasets", "list", "--tenant", "acme", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    datasets = tmp_path / "ws" / "tenants" / "acme" / "datasets"
    assert [p for p in datasets.rglob("*")] in ([], [datasets / "support"])
