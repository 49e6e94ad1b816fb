"""Tests for engine.eval.diff: pairing, buckets, verdicts, gate logic, slices and the files written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import StudioError
from engine.eval.diff import DiffResult, diff_evals, gate_passes
from engine.hashing import sha256_json


def write_eval(directory: Path, eval_id: str, model_ref: str, rows: list[dict[str, Any]]) -> Path:
    """An eval directory as `studio eval` writes it. rows: item_id, score, optional meta/hash/output."""
    directory.mkdir(parents=True)
    lines = []
    for r in rows:
        prompt = [{"role": "system", "content": "be brief"},
                  {"role": "user", "content": f"question {r['item_id']}"}]
        reference = f"answer {r['item_id']}"
        item_hash = r.get("item_hash") or sha256_json({"prompt": prompt, "reference": reference})
        output = r.get("output", reference if r["score"] == 1.0 else "something else")
        lines.append(json.dumps({
            "item_id": r["item_id"], "item_hash": item_hash, "prompt": prompt,
            "reference": reference, "output": output, "score": float(r["score"]),
            "meta": r.get("meta", {}),
        }))
    (directory / "outputs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {
        "eval_id": eval_id, "model_ref": model_ref, "dataset": "support@v1", "split": "eval",
        "n": len(rows), "score": sum(r["score"] for r in rows) / max(1, len(rows)),
        "grader": {"type": "exact_match", "ignore_case": True, "ignore_whitespace": True},
        "settings": {"max_new_tokens": 32},
    }
    (directory / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return directory


def make_pair(tmp_path: Path, buckets: dict[str, int],
              meta: list[dict[str, Any]] | None = None) -> tuple[Path, Path]:
    """Two evals whose paired outcomes have the given bucket counts (in the order listed)."""
    outcome = {"both_right": (1, 1), "fixed": (0, 1), "broke": (1, 0), "both_wrong": (0, 0)}
    base_rows, tuned_rows = [], []
    i = 0
    for bucket, count in buckets.items():
        for _ in range(count):
            b, t = outcome[bucket]
            m = meta[i] if meta else {"bucket_hint": bucket}
            base_rows.append({"item_id": f"it-{i:03d}", "score": b, "meta": m})
            tuned_rows.append({"item_id": f"it-{i:03d}", "score": t, "meta": m})
            i += 1
    base = write_eval(tmp_path / "base", "ev-base", "base-model", base_rows)
    tuned = write_eval(tmp_path / "tuned", "ev-tuned", "run-123", tuned_rows)
    return base, tuned


def read_pairs(result: DiffResult) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.pairs_path.read_text().splitlines()]


def test_better_writes_all_files(tmp_path: Path) -> None:
    base, tuned = make_pair(tmp_path, {"both_right": 10, "fixed": 15, "broke": 0, "both_wrong": 5})
    res = diff_evals(base, tuned, tmp_path / "diff")
    assert res.verdict == "better" and res.gate_passed
    o = res.stats["overall"]
    assert (o["n"], o["both_right"], o["fixed"], o["broke"], o["both_wrong"]) == (30, 10, 15, 0, 5)
    assert o["p_value"] == pytest.approx(2 * 0.5**15)
    assert o["base_score"] == pytest.approx(10 / 30) and o["tuned_score"] == pytest.approx(25 / 30)

    on_disk = json.loads((tmp_path / "diff" / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(res.stats))
    assert on_disk["verdict"] == "better"
    assert on_disk["gate"] == {"require": "better", "alpha": 0.01, "margin": 0.02, "per_slice": False,
                               "failed_slices": [], "passed": True}
    assert on_disk["labels"] == {"base": "base-model", "tuned": "run-123"}
    assert (on_disk["base_eval_id"], on_disk["tuned_eval_id"]) == ("ev-base", "ev-tuned")

    pairs = read_pairs(res)
    assert len(pairs) == 30
    assert [p["item_id"] for p in pairs] == [f"it-{i:03d}" for i in range(30)]
    for p in pairs:
        assert set(p) == {"item_id", "bucket", "base_score", "tuned_score", "meta"}
        assert p["bucket"] == p["meta"]["bucket_hint"]
    assert res.report_path == tmp_path / "diff" / "report.html"
    assert res.report_path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(x.name for x in (tmp_path / "diff").iterdir()) == [
        "pairs.jsonl", "report.html", "stats.json"]  # no temp files left behind


def test_worse(tmp_path: Path) -> None:
    base, tuned = make_pair(tmp_path, {"both_right": 10, "fixed": 1, "broke": 14, "both_wrong": 5})
    res = diff_evals(base, tuned, tmp_path / "diff", require="not_worse")
    assert res.verdict == "worse"
    assert not res.gate_passed  # returned, not raised
    assert res.stats["overall"]["losses"] == 14


def test_no_difference(tmp_path: Path) -> None:
    base, tuned = make_pair(tmp_path, {"both_right": 10, "fixed": 4, "broke": 2, "both_wrong": 5})
    res = diff_evals(base, tuned, tmp_path / "diff")
    assert res.verdict == "no_difference"
    assert not res.gate_passed


def test_alpha_decides(tmp_path: Path) -> None:
    # 8 fixed / 0 broke: p = 2 / 256 ≈ 0.0078
    base, tuned = make_pair(tmp_path, {"both_right": 3, "fixed": 8})
    assert diff_evals(base, tuned, tmp_path / "d1", alpha=0.01).verdict == "better"
    assert diff_evals(base, tuned, tmp_path / "d2", alpha=0.005).verdict == "no_difference"


@pytest.mark.parametrize(
    "verdict,require,passed",
    [
        ("better", "better", True), ("no_difference", "better", False), ("worse", "better", False),
        ("better", "not_worse", True), ("no_difference", "not_worse", True),
        ("worse", "not_worse", False),
        ("better", "none", True), ("no_difference", "none", True), ("worse", "none", True),
    ],
)
def test_gate_logic(verdict: str, require: str, passed: bool) -> None:
    assert gate_passes(verdict, require) is passed


@pytest.mark.parametrize("require,passed", [("better", False), ("not_worse", False), ("none", True)])
def test_gate_through_diff(tmp_path: Path, require: str, passed: bool) -> None:
    base, tuned = make_pair(tmp_path, {"both_right": 2, "broke": 12})
    res = diff_evals(base, tuned, tmp_path / "diff", require=require)
    assert res.verdict == "worse"
    assert res.gate_passed is passed
    assert res.stats["gate"]["passed"] is passed


def test_different_item_ids(tmp_path: Path) -> None:
    base = write_eval(tmp_path / "base", "a", "m", [{"item_id": "x", "score": 1}, {"item_id": "y", "score": 0}])
    tuned = write_eval(tmp_path / "tuned", "b", "m", [{"item_id": "x", "score": 1}, {"item_id": "z", "score": 1}])
    with pytest.raises(StudioError, match="not run on the same items") as info:
        diff_evals(base, tuned, tmp_path / "diff")
    err = info.value
    assert "1 only in base" in err.what and "1 only in tuned" in err.what
    assert err.hint and "same dataset version" in err.hint
    assert "question" not in str(err) and "answer" not in str(err)  # no customer text
    assert not (tmp_path / "diff").exists()


def test_different_item_hash(tmp_path: Path) -> None:
    base = write_eval(tmp_path / "base", "a", "m", [{"item_id": "x", "score": 1}])
    tuned = write_eval(tmp_path / "tuned", "b", "m", [{"item_id": "x", "score": 1, "item_hash": "f" * 64}])
    with pytest.raises(StudioError, match="1 with different content"):
        diff_evals(base, tuned, tmp_path / "diff")


def test_slices(tmp_path: Path) -> None:
    meta = ([{"topic": "billing"}] * 12 + [{"topic": "shipping"}] * 6 + [{"other": 1}] * 2)
    # billing: 12 fixed; shipping: 3 broke, 3 both_right; missing key: 2 both_wrong
    buckets = {"fixed": 12, "broke": 3, "both_right": 3, "both_wrong": 2}
    base, tuned = make_pair(tmp_path, buckets, meta=meta)
    res = diff_evals(base, tuned, tmp_path / "diff", slice_key="topic")
    slices = res.stats["slices"]
    assert list(slices) == sorted(slices)
    assert set(slices) == {"billing", "shipping", "(none)"}
    assert (slices["billing"]["n"], slices["billing"]["fixed"]) == (12, 12)
    assert slices["billing"]["verdict"] == "better"
    assert (slices["shipping"]["broke"], slices["shipping"]["both_right"]) == (3, 3)
    assert slices["shipping"]["verdict"] == "no_difference"
    assert slices["(none)"]["both_wrong"] == 2
    assert sum(s["n"] for s in slices.values()) == res.stats["overall"]["n"]
    assert res.stats["slice_key"] == "topic"
    assert "billing" in res.report_path.read_text()


def test_no_slices_without_key(tmp_path: Path) -> None:
    base, tuned = make_pair(tmp_path, {"both_right": 2, "fixed": 1})
    res = diff_evals(base, tuned, tmp_path / "diff")
    assert res.stats["slices"] == {}


def test_labels_override(tmp_path: Path) -> None:
    base, tuned = make_pair(tmp_path, {"both_right": 2})
    res = diff_evals(base, tuned, tmp_path / "diff", base_label="B", tuned_label="T")
    assert res.stats["labels"] == {"base": "B", "tuned": "T"}


def test_bad_arguments_and_inputs(tmp_path: Path) -> None:
    base, tuned = make_pair(tmp_path, {"both_right": 2})
    with pytest.raises(StudioError):
        diff_evals(base, tuned, tmp_path / "d", require="maybe")
    with pytest.raises(StudioError):
        diff_evals(base, tuned, tmp_path / "d", alpha=1.5)
    with pytest.raises(StudioError, match="summary not found"):
        diff_evals(tmp_path / "nowhere", tuned, tmp_path / "d")
    (tuned / "outputs.jsonl").write_text("{not json\n")
    with pytest.raises(StudioError, match="not valid JSON") as info:
        diff_evals(base, tuned, tmp_path / "d")
    assert info.value.where and info.value.where.endswith("outputs.jsonl:1")


def test_continuous_scores_use_the_permutation_test_and_bootstrap(tmp_path: Path) -> None:
    from engine.eval.significance import paired_bootstrap_ci, paired_permutation_test

    base_scores = [0.2 + 0.01 * (i % 7) for i in range(40)]
    tuned_scores = [min(1.0, b + 0.25 + 0.005 * (i % 3)) for i, b in enumerate(base_scores)]
    base = write_eval(tmp_path / "base", "a", "m",
                      [{"item_id": f"i{i}", "score": s} for i, s in enumerate(base_scores)])
    tuned = write_eval(tmp_path / "tuned", "b", "m",
                       [{"item_id": f"i{i}", "score": s} for i, s in enumerate(tuned_scores)])
    res = diff_evals(base, tuned, tmp_path / "diff")
    o = res.stats["overall"]
    assert o["score_type"] == "continuous" and o["test"] == "paired_permutation"
    assert o["p_value"] == pytest.approx(paired_permutation_test(base_scores, tuned_scores, seed=0))
    assert tuple(o["diff_ci"]) == pytest.approx(paired_bootstrap_ci(base_scores, tuned_scores, seed=0))
    assert res.verdict == "better" and res.gate_passed
    assert o["fixed"] == sum(b < 0.5 <= t for b, t in zip(base_scores, tuned_scores))


def test_scores_outside_0_1_are_refused(tmp_path: Path) -> None:
    base = write_eval(tmp_path / "base", "a", "m", [{"item_id": "x", "score": 1.5}])
    tuned = write_eval(tmp_path / "tuned", "b", "m", [{"item_id": "x", "score": 1}])
    with pytest.raises(StudioError, match="between 0 and 1"):
        diff_evals(base, tuned, tmp_path / "diff")


def _sliced(tmp_path: Path, broke_in_b: int) -> tuple[Path, Path]:
    """Slice A: 60 items, 20 fixed. Slice B: 40 items, `broke_in_b` broke, the rest both right."""
    base_rows, tuned_rows = [], []
    for i in range(60):
        meta = {"queue": "A"}
        base_rows.append({"item_id": f"a{i}", "score": 0 if i < 20 else 1, "meta": meta})
        tuned_rows.append({"item_id": f"a{i}", "score": 1, "meta": meta})
    for i in range(40):
        meta = {"queue": "B"}
        base_rows.append({"item_id": f"b{i}", "score": 1, "meta": meta})
        tuned_rows.append({"item_id": f"b{i}", "score": 0 if i < broke_in_b else 1, "meta": meta})
    return (write_eval(tmp_path / "base", "a", "m", base_rows),
            write_eval(tmp_path / "tuned", "b", "m", tuned_rows))


def test_per_slice_non_inferiority_catches_a_hidden_regression(tmp_path: Path) -> None:
    base, tuned = _sliced(tmp_path, broke_in_b=6)
    whole = diff_evals(base, tuned, tmp_path / "d1", require="better", slice_key="queue")
    assert whole.verdict == "better" and whole.gate_passed  # the overall gain hides slice B
    sliced = diff_evals(base, tuned, tmp_path / "d2", require="better", slice_key="queue",
                        per_slice=True, margin=0.05)
    assert not sliced.gate_passed and sliced.stats["gate"]["failed_slices"] == ["B"]
    b = sliced.stats["slices"]["B"]
    assert b["non_inferiority"]["low"] < -0.05 and not b["non_inferiority"]["passed"]
    assert sliced.stats["slices"]["A"]["non_inferiority"]["passed"]
    # Holm across the two slices: never below the raw p-value
    for s in sliced.stats["slices"].values():
        assert s["p_value_holm"] >= s["p_value"]


def test_non_inferiority_margin_decides_both_ways(tmp_path: Path) -> None:
    base, tuned = _sliced(tmp_path, broke_in_b=1)
    res = diff_evals(base, tuned, tmp_path / "d", require="not_worse", slice_key="queue",
                     per_slice=True, margin=0.2)
    low = res.stats["slices"]["B"]["non_inferiority"]["low"]
    assert res.gate_passed and low > -0.2
    tight = diff_evals(base, tuned, tmp_path / "d2", require="not_worse", slice_key="queue",
                       per_slice=True, margin=-low - 1e-6)
    assert not tight.gate_passed and tight.stats["gate"]["failed_slices"] == ["B"]
    loose = diff_evals(base, tuned, tmp_path / "d3", require="not_worse", slice_key="queue",
                       per_slice=True, margin=-low + 1e-6)
    assert loose.gate_passed


def test_per_slice_gate_needs_a_slice_key(tmp_path: Path) -> None:
    base, tuned = _sliced(tmp_path, broke_in_b=0)
    with pytest.raises(StudioError, match="slice key"):
        diff_evals(base, tuned, tmp_path / "d", per_slice=True)


def test_duplicate_item_id(tmp_path: Path) -> None:
    rows = [{"item_id": "x", "score": 1}, {"item_id": "x", "score": 0}]
    base = write_eval(tmp_path / "base", "a", "m", rows)
    tuned = write_eval(tmp_path / "tuned", "b", "m", rows)
    with pytest.raises(StudioError, match="duplicate"):
        diff_evals(base, tuned, tmp_path / "diff")


def test_rerun_overwrites(tmp_path: Path) -> None:
    base, tuned = make_pair(tmp_path, {"both_right": 2, "fixed": 1})
    first = diff_evals(base, tuned, tmp_path / "diff")
    before = first.stats_path.read_bytes(), first.pairs_path.read_bytes(), first.report_path.read_bytes()
    second = diff_evals(base, tuned, tmp_path / "diff")
    after = second.stats_path.read_bytes(), second.pairs_path.read_bytes(), second.report_path.read_bytes()
    assert before == after  # deterministic
