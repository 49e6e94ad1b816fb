"""Refine acceptance: the noisy multi-format corpus of scripts/make_noisy_data.py, end to end.

Planted PII, exact and near duplicates, junk and eval items leaked into the training exports go
through `configs/refine_noisy.yaml` exactly as shipped; the ground truth (truth.json) says what
must come out: no planted PII string in any output file, ≥ 95% of near-duplicate pairs collapsed,
≥ 98% of clean conversations kept, every junk record rejected with a reason, no eval item in
train/val. Multi-process refine gives the same bytes; the encrypted vault round-trips.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.data.refine import refine
from engine.registry import Registry
from engine.workspace import Workspace
from tests.helpers import noisy_corpus

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<tmp>/data/noisy (raw files + truth.json) and <tmp>/configs/refine_noisy.yaml."""
    base = tmp_path_factory.mktemp("noisy")
    noisy_corpus(base / "data" / "noisy", 400, 11)
    (base / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "refine_noisy.yaml", base / "configs" / "refine_noisy.yaml")
    return base


def _refine(corpus: Path, tmp: Path, edit: str | None = None) -> Path:
    config = corpus / "configs" / "refine_noisy.yaml"
    if edit is not None:
        config = corpus / "configs" / f"variant-{abs(hash(edit))}.yaml"
        text = (corpus / "configs" / "refine_noisy.yaml").read_text(encoding="utf-8")
        config.write_text(text.replace("refine:\n", "refine:\n" + edit, 1), encoding="utf-8")
    ws = Workspace(tmp / "ws").ensure()
    return refine(load_config(config), ws, Registry(ws.registry_path)).path


@pytest.fixture(scope="module")
def refined(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _refine(corpus, tmp_path_factory.mktemp("refined"))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _kept(out: Path) -> dict[str, str]:
    """source id → split of every kept record."""
    return {r["source"]["id"]: split for split in ("train", "val", "eval")
            for r in _jsonl(out / f"{split}.jsonl")}


def test_no_planted_pii_string_survives_in_any_output_file(corpus: Path, refined: Path) -> None:
    truth = json.loads((corpus / "data" / "noisy" / "truth.json").read_text(encoding="utf-8"))
    everything = "".join(p.read_text(encoding="utf-8") for p in sorted(refined.iterdir()))
    planted = {kind: values for kind, values in truth["pii"].items() if values}
    assert {"emails", "phones", "cards", "ibans", "addresses", "names"} <= set(planted)
    leaks = [(kind, value) for kind, values in planted.items() for value in values
             if value in everything]
    assert leaks == []
    card = json.loads((refined / "card.json").read_text(encoding="utf-8"))
    for kind in ("email", "phone", "card", "iban", "ip", "address", "person"):
        assert card["pii"][kind] > 0, kind  # every type was found and counted


def test_duplicates_collapse_clean_records_survive_junk_is_rejected(corpus: Path,
                                                                   refined: Path) -> None:
    truth = json.loads((corpus / "data" / "noisy" / "truth.json").read_text(encoding="utf-8"))
    kept = _kept(refined)
    near = truth["near_duplicates"]
    collapsed = [p for p in near if not (p["id"] in kept and p["of"] in kept)]
    assert len(near) >= 10 and len(collapsed) / len(near) >= 0.95
    assert all(not (p["id"] in kept and p["of"] in kept) for p in truth["exact_duplicates"])
    clean = truth["clean"]
    assert sum(c in kept for c in clean) / len(clean) >= 0.98
    junk_kept = [j for j in truth["junk"] if j["id"] in kept]
    assert junk_kept == []

    rejects = _jsonl(refined / "rejects.jsonl")
    assert rejects and all(r["stage"] and r["reason"] for r in rejects)  # every reject has a reason
    by_id = {r["source"]["id"]: r for r in rejects}
    kinds = {j["kind"]: by_id[j["id"]]["reason"] for j in truth["junk"] if j["id"] in by_id}
    assert kinds.get("german") == kinds.get("spanish") == "wrong_language"
    lineage = {e["id"]: e for e in _jsonl(refined / "lineage.jsonl")}
    dup_ids = {r["record_id"] for r in rejects if r["reason"] in ("exact_duplicate", "near_duplicate")}
    assert dup_ids == {d for e in lineage.values() for d in e["duplicates"]}  # clusters in lineage


def test_eval_items_never_reach_training(corpus: Path, refined: Path) -> None:
    truth = json.loads((corpus / "data" / "noisy" / "truth.json").read_text(encoding="utf-8"))
    kept = _kept(refined)
    assert truth["contaminated"]
    for item in truth["contaminated"]:
        assert kept.get(item["id"]) not in ("train", "val"), item
    eval_users = {json.dumps([m for m in r["messages"] if m["role"] == "user"])
                  for r in _jsonl(refined / "eval.jsonl")}
    for split in ("train", "val"):
        for r in _jsonl(refined / f"{split}.jsonl"):
            assert json.dumps([m for m in r["messages"] if m["role"] == "user"]) not in eval_users
    rejects = {r["source"]["id"]: r for r in _jsonl(refined / "rejects.jsonl")}
    reasons = [rejects[i["id"]]["reason"] for i in truth["contaminated"] if i["id"] in rejects]
    assert reasons.count("eval_ngram_overlap") + reasons.count("eval_near_duplicate") >= 1


def test_card_html_is_self_contained(refined: Path) -> None:
    html = (refined / "card.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "<script" not in html.lower()
    assert "wrong_language" in html and "near_duplicate" in html


def test_worker_processes_give_the_same_bytes(corpus: Path, refined: Path, tmp_path: Path) -> None:
    parallel = _refine(corpus, tmp_path, edit="  workers: 2\n")
    for name in OUTPUTS:
        assert (parallel / name).read_bytes() == (refined / name).read_bytes(), name


def test_encrypted_vault_maps_placeholders_back(corpus: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.data.vault import read_vault, vault_aad

    key = bytes(range(32))
    monkeypatch.setenv("STUDIO_VAULT_KEY", base64.b64encode(key).decode())
    text = (corpus / "configs" / "refine_noisy.yaml").read_text(encoding="utf-8")
    (corpus / "configs" / "vaulted.yaml").write_text(
        text.replace("vault: discard", "vault: encrypted"), encoding="utf-8")
    ws = Workspace(tmp_path / "ws").ensure()
    out = refine(load_config(corpus / "configs" / "vaulted.yaml"), ws, Registry(ws.registry_path))
    vault_bytes = (out.path / "pii_vault.enc").read_bytes()
    truth = json.loads((corpus / "data" / "noisy" / "truth.json").read_text(encoding="utf-8"))
    emails = truth["pii"]["emails"]
    assert not any(e.encode() in vault_bytes for e in emails)  # encrypted at rest
    mapping = read_vault(out.path / "pii_vault.enc", key, vault_aad(out.name, out.version, out.tenant))
    originals = {v.lower() for values in mapping.values() for v in values}
    # (emails only in stripped quotes/signatures or in rejected records never reach the vault)
    assert sum(e.lower() in originals for e in emails) / len(emails) >= 0.5
    train = (out.path / "train.jsonl").read_text(encoding="utf-8")
    import re

    used = set(re.findall(r"<(?:EMAIL|PHONE|PERSON|CARD|IBAN|IP|ADDRESS)_\d+>", train))
    assert used and used <= set(mapping)  # every placeholder in the data can be mapped back
