"""scripts/make_noisy_data.py: determinism, ground truth that matches the raw files, and a corpus
whose planted duplicates / contamination are measurably what truth.json says they are."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 300
SEED = 11


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("make_noisy_data",
                                                  ROOT / "scripts" / "make_noisy_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_noisy_data"] = module
    spec.loader.exec_module(module)
    return module


gen = _load()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[Any]]:
    out = tmp_path_factory.mktemp("noisy")
    records: list[Any] = []
    truth = gen.generate(out, N, SEED, on_record=records.append)
    return out, truth, records


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# -- independent checks (not the generator's own helpers) -------------------------------------
def luhn(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2)
                for i, d in enumerate(digits))
    return total % 10 == 0


def iban_mod97(iban: str) -> bool:
    s = iban.replace(" ", "")
    s = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def shingles(text: str, k: int = 5) -> set[str]:
    t = re.sub(r"\d+", "0", " ".join(text.split()).casefold())
    return {t[i:i + k] for i in range(max(1, len(t) - k + 1))}


def weighted_jaccard(a: Any, b: Any) -> float:
    """Character 5-shingle Jaccard with the customer's side counted 3 times (as dedup does)."""
    ua, aa = (shingles(" ".join(t for r, t in a.turns if r == role)) for role in ("user", "assistant"))
    ub, ab = (shingles(" ".join(t for r, t in b.turns if r == role)) for role in ("user", "assistant"))
    return (3 * len(ua & ub) + len(aa & ab)) / max(1, 3 * len(ua | ub) + len(aa | ab))


def user_ngrams(turns: list[Any], n: int = 8) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", " ".join(t for r, t in turns if r == "user").casefold())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


# -- tests ---------------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    gen.generate(tmp_path / "a", 150, 3)
    gen.generate(tmp_path / "b", 150, 3)
    gen.generate(tmp_path / "c", 150, 4)
    a, b, c = (_digests(tmp_path / x) for x in "abc")
    assert a == b
    assert set(a) == {*gen.FILES.values(), "eval_items.jsonl", "truth.json"}
    assert a["tickets.csv"] != c["tickets.csv"] and a["truth.json"] != c["truth.json"]


def test_scale_mode_streams_the_same_corpus_with_counts_only(corpus: Any, tmp_path: Path) -> None:
    out, truth, _ = corpus
    scaled = gen.generate(tmp_path / "s", N, SEED, scale=True)
    full, streamed = _digests(out), _digests(tmp_path / "s")
    assert {k: v for k, v in full.items() if k != "truth.json"} == \
        {k: v for k, v in streamed.items() if k != "truth.json"}
    assert scaled["streamed"] is True and "records" not in scaled and "pii" not in scaled
    assert scaled["counts"] == truth["counts"] and scaled["files"] == truth["files"]


def test_counts_add_up_to_what_was_asked(corpus: Any) -> None:
    out, truth, records = corpus
    counts = truth["counts"]
    assert sum(counts.values()) == N == len(truth["records"]) == len(records)
    assert sum(truth["files"].values()) == N
    assert counts == {k: v for k, v in gen.plan_counts(N, len(truth["eval_ids"])).items() if v}
    assert {j["kind"] for j in truth["junk"]} == set(gen.JUNK_KINDS)
    assert all(counts[f"junk:{k}"] >= 2 for k in gen.JUNK_KINDS)
    assert len(truth["clean"]) == counts["clean"] and len(truth["junk"]) == sum(
        v for k, v in counts.items() if k.startswith("junk:"))
    assert len(truth["exact_duplicates"]) == counts["exact_dup"] >= 3
    assert len(truth["near_duplicates"]) == counts["near_dup"] >= 3
    assert {p["edit"] for p in truth["near_duplicates"]} == set(gen.NEAR_EDITS)
    assert 2 <= len(truth["contaminated"]) <= len(truth["eval_ids"]) // 2
    assert {c["edit"] for c in truth["contaminated"]} >= {"verbatim", "typo"}
    per_file = Counter(r["file"] for r in truth["records"].values())
    assert dict(per_file) == {k: v for k, v in truth["files"].items() if v}
    assert all(v > 0 for v in truth["files"].values())  # every format is present


def test_every_record_id_is_in_its_file_and_eval_file_matches(corpus: Any) -> None:
    out, truth, _ = corpus
    texts = {name: (out / name).read_text(encoding="utf-8") for name in gen.FILES.values()}
    for tid, rec in truth["records"].items():
        assert re.search(rf"\b{re.escape(tid)}\b", texts[rec["file"]]), tid
    evals = [json.loads(line) for line in (out / "eval_items.jsonl").read_text().splitlines()]
    assert [e["id"] for e in evals] == truth["eval_ids"]
    assert all(e["messages"][-1]["role"] == "assistant" for e in evals)
    assert {c["eval_id"] for c in truth["contaminated"]} <= set(truth["eval_ids"])
    ids = list(truth["records"])
    for pair in truth["exact_duplicates"] + truth["near_duplicates"]:
        assert pair["of"] in truth["clean"] and ids.index(pair["of"]) < ids.index(pair["id"])


def test_planted_pii_occurs_in_the_raw_files_and_is_valid(corpus: Any) -> None:
    out, truth, _ = corpus
    raw = "\n".join((out / name).read_text(encoding="utf-8") for name in gen.FILES.values())
    pii = truth["pii"]
    for ptype in ("emails", "phones", "cards", "ibans", "ipv4", "ipv6", "addresses", "names",
                  "first_names"):
        assert pii[ptype], f"no {ptype} planted"
        for value in pii[ptype]:
            assert value in raw, (ptype, value)
    for card in pii["cards"]:
        digits = re.sub(r"\D", "", card)
        assert 15 <= len(digits) <= 16 and luhn(card), card
    for iban in pii["ibans"]:
        assert re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9 ]+", iban) and iban_mod97(iban), iban
    for phone in pii["phones"]:
        assert phone.startswith(("+", "00")) and 9 <= len(re.sub(r"\D", "", phone)) <= 15, phone
    assert all(len(ip.split(".")) == 4 for ip in pii["ipv4"])
    assert all(":" in ip for ip in pii["ipv6"])
    # per-record truth is consistent with the global lists, and clean PII-free records exist
    for rec in truth["records"].values():
        for ptype, values in rec["pii"].items():
            assert set(values) <= set(pii[ptype])
    assert truth["pii_free"] and set(truth["pii_free"]) <= set(truth["clean"])


def test_duplicates_and_contamination_are_what_truth_says(corpus: Any) -> None:
    """Planted near-duplicates are far more alike than any two distinct clean records, and
    planted eval copies overlap their eval item far more than clean records overlap any."""
    out, truth, records = corpus
    by_id = {r.tid: r for r in records}
    for pair in truth["exact_duplicates"]:
        assert by_id[pair["id"]].turns == by_id[pair["of"]].turns
    near = [weighted_jaccard(by_id[p["id"]], by_id[p["of"]]) for p in truth["near_duplicates"]]
    assert min(near) >= 0.85
    clean = [by_id[i] for i in truth["clean"]]
    distinct = max(weighted_jaccard(a, b) for a, b in itertools.combinations(clean, 2))
    assert distinct < 0.6
    evals = {json.loads(x)["id"]: [[m["role"], m["content"]] for m in json.loads(x)["messages"]]
             for x in (out / "eval_items.jsonl").read_text().splitlines()}
    grams = {k: user_ngrams(v) for k, v in evals.items()}

    def share(turns: list[Any], eval_id: str) -> float:
        return len(user_ngrams(turns) & grams[eval_id]) / len(grams[eval_id])

    for c in truth["contaminated"]:
        assert share(by_id[c["id"]].turns, c["eval_id"]) >= (0.99 if c["edit"] == "verbatim" else 0.6)
    assert max(share(r.turns, e) for r in clean for e in grams) < 0.45
    # the refine also decontaminates against its own eval split: distinct clean records must not
    # look like copies of each other either
    own = {r.tid: user_ngrams(r.turns) for r in clean}
    worst = max(len(own[a] & own[b]) / len(own[b]) for a in own for b in own if a != b and own[b])
    assert worst < 0.45


def test_junk_records_are_junk(corpus: Any) -> None:
    _, truth, records = corpus
    by_id = {r.tid: r for r in records}
    for j in truth["junk"]:
        turns = by_id[j["id"]].turns
        text = " ".join(t for _, t in turns)
        kind = j["kind"]
        if kind == "empty":
            assert not text.strip()
        elif kind == "no_agent_reply":
            assert {r for r, _ in turns} == {"user"}
        elif kind == "tool_only":
            assert {r for r, _ in turns} <= {"bot", "tool"}
        elif kind == "base64":
            assert re.fullmatch(r"[A-Za-z0-9+/=]{200,}", turns[0][1])
        elif kind == "repetitive":
            lines = turns[0][1].splitlines()
            assert len(lines) >= 15 and len(set(lines)) == 1
        elif kind == "german":
            assert re.search(r"\b(ich|und|nicht|Sie)\b", text)
        elif kind == "spanish":
            assert re.search(r"\b(que|por|el|y)\b", text)


def test_config_validates_and_its_inputs_read_every_record(corpus: Any) -> None:
    """configs/refine_noisy.yaml maps every file: ingest finds every ticket id as a source id."""
    from engine.config import load_config
    from engine.data.ingest import read_input
    from engine.records import Conversation

    out, truth, _ = corpus
    cfg = load_config(ROOT / "configs" / "refine_noisy.yaml")
    assert cfg.kind == "refine" and cfg.refine is not None
    assert {Path(i.path).name for i in cfg.refine.inputs} == set(gen.FILES.values())
    assert [Path(p).name for p in cfg.refine.decontam.against] == ["eval_items.jsonl"]
    found: set[str] = set()
    for inp in cfg.refine.inputs:
        path = out / Path(inp.path).name
        for item in read_input(path, inp, label=path.name):
            if isinstance(item, Conversation):
                found.add(item.source.id)
                assert item.source.file == path.name
    missing = set(truth["records"]) - found
    # only records with nothing to read may vanish at ingest (an empty transcript cell)
    assert all(truth["records"][t].get("junk") == "empty" for t in missing), sorted(missing)[:5]
