"""Eval diff: pair two evals item by item, test the difference, apply the gate, write the results.

Binary scores (every score 0 or 1) get the exact McNemar test and a Tango interval; continuous
scores a paired permutation test and a paired bootstrap CI (engine/eval/significance.py). Slices get
the same summary with Holm-adjusted p-values across slices. The gate:
  better     the tuned model is significantly better overall (p < alpha, higher score)
  not_worse  non-inferiority overall: the lower bound of the 95% CI of (tuned − base) > −margin
  none       always passes (report only)
and with per_slice, every slice must also be non-inferior at the margin (a gain on the whole
suite may not hide a regression on one ticket category). With a pairwise judge
(engine/eval/judged.py) a local model also compares every pair of differing outputs in both
orders; with its min_win_rate set, the gate also needs the lower bound of the tuned win rate's
95% interval at or above it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.atomic import write_text_atomic
from engine.errors import StudioError
from engine.eval.judged import JudgeSetup, run_judge
from engine.eval.report import render_report
from engine.eval.significance import (
    holm,
    non_inferiority,
    paired_binary_summary,
    paired_continuous_summary,
)

VERDICTS = ("better", "worse", "no_difference")
REQUIRES = ("better", "not_worse", "none")
BUCKETS = ("broke", "fixed", "both_wrong", "both_right")
MISSING_SLICE = "(none)"

_SAME_ITEMS_HINT = "run both evals on the same dataset version and split (and the same limit)"


@dataclass
class DiffResult:
    stats: dict[str, Any]
    verdict: str
    gate_passed: bool
    out_dir: Path
    report_path: Path

    @property
    def stats_path(self) -> Path:
        return self.out_dir / "stats.json"

    @property
    def pairs_path(self) -> Path:
        return self.out_dir / "pairs.jsonl"


# ---------------------------------------------------------------------------------------- reading
def _read_summary(eval_dir: Path) -> dict[str, Any]:
    path = eval_dir / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudioError("eval summary not found", where=str(path),
                          hint="point at an eval directory written by `studio eval`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudioError(f"cannot read eval summary ({exc.__class__.__name__})",
                          where=str(path)) from None
    if not isinstance(data, dict):
        raise StudioError("eval summary is not a JSON object", where=str(path))
    return data


_ROW_KEYS = ("item_id", "item_hash", "score")


def _read_outputs(eval_dir: Path) -> dict[str, dict[str, Any]]:
    """outputs.jsonl rows keyed by item_id, in file order."""
    path = eval_dir / "outputs.jsonl"
    rows: dict[str, dict[str, Any]] = {}
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise StudioError("eval outputs not found", where=str(path),
                          hint="point at an eval directory written by `studio eval`") from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise StudioError("line is not valid JSON", where=where) from None
            if not isinstance(row, dict) or any(k not in row for k in _ROW_KEYS):
                raise StudioError("output row needs item_id, item_hash and score", where=where)
            item_id = str(row["item_id"])
            if item_id in rows:
                raise StudioError("duplicate item_id in eval outputs", where=where,
                                  hint="each eval item must appear once")
            rows[item_id] = row
    return rows


def _check_same_items(base: dict[str, dict[str, Any]], tuned: dict[str, dict[str, Any]]) -> None:
    base_ids, tuned_ids = set(base), set(tuned)
    only_base = len(base_ids - tuned_ids)
    only_tuned = len(tuned_ids - base_ids)
    changed = sum(1 for i in base_ids & tuned_ids if base[i]["item_hash"] != tuned[i]["item_hash"])
    if only_base or only_tuned or changed:
        raise StudioError(
            "the two evals were not run on the same items: "
            f"{len(base_ids)} base items, {len(tuned_ids)} tuned items; "
            f"{only_base} only in base, {only_tuned} only in tuned, "
            f"{changed} with different content",
            hint=_SAME_ITEMS_HINT,
        )
    if not base_ids:
        raise StudioError("the evals have no items", hint=_SAME_ITEMS_HINT)


# ------------------------------------------------------------------------------------------ logic
def verdict_for(summary: dict[str, Any], alpha: float) -> str:
    """'better' / 'worse' when the paired test is significant at alpha, else 'no_difference'."""
    if summary["p_value"] < alpha:
        if summary["tuned_score"] > summary["base_score"]:
            return "better"
        if summary["tuned_score"] < summary["base_score"]:
            return "worse"
    return "no_difference"


def gate_passes(verdict: str, require: str, non_inferior: bool | None = None) -> bool:
    """`non_inferior`: the non-inferiority test's decision; without it, not_worse falls back to
    "not significantly worse"."""
    if require == "better":
        return verdict == "better"
    if require == "not_worse":
        return non_inferior if non_inferior is not None else verdict != "worse"
    if require == "none":
        return True
    raise StudioError(f"unknown gate requirement '{require}'", where="gate.require",
                      hint="use 'better', 'not_worse' or 'none'")


def bucket_of(base_score: float, tuned_score: float) -> str:
    """Binary scores: right means 1. Continuous scores: right means at least 0.5."""
    base_right, tuned_right = base_score >= 0.5, tuned_score >= 0.5
    if base_score in (0.0, 1.0) and tuned_score in (0.0, 1.0):
        base_right, tuned_right = base_score == 1.0, tuned_score == 1.0
    if base_right and tuned_right:
        return "both_right"
    if tuned_right:
        return "fixed"
    if base_right:
        return "broke"
    return "both_wrong"


def is_binary(*scores: list[float]) -> bool:
    return all(x in (0.0, 1.0) for s in scores for x in s)


def _summary(base: list[float], tuned: list[float], binary: bool, margin: float,
             seed: int = 0) -> dict[str, Any]:
    if any(not 0.0 <= x <= 1.0 for s in (base, tuned) for x in s):
        raise StudioError("eval scores must lie between 0 and 1 to compare two evals",
                          hint="graders return scores in [0, 1]")
    if binary:
        out = paired_binary_summary(base, tuned)
    else:
        out = paired_continuous_summary(base, tuned, seed=seed)
        buckets = [bucket_of(b, t) for b, t in zip(base, tuned)]
        out.update({name: buckets.count(name) for name in BUCKETS})
    out["score_type"] = "binary" if binary else "continuous"
    out["non_inferiority"] = non_inferiority(base, tuned, margin, binary=binary, seed=seed)
    return out


def _slice_value(meta: Any, key: str) -> str:
    if not isinstance(meta, dict) or meta.get(key) is None:
        return MISSING_SLICE
    value = meta[key]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _label(given: str | None, summary: dict[str, Any], default: str) -> str:
    if given:
        return given
    return str(summary.get("model_ref") or summary.get("eval_id") or default)


# ---------------------------------------------------------------------------------------- writing
def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def diff_evals(
    base_dir: Path,
    tuned_dir: Path,
    out_dir: Path,
    *,
    alpha: float = 0.01,
    require: str = "better",
    margin: float = 0.02,
    per_slice: bool = False,
    slice_key: str | None = None,
    base_label: str | None = None,
    tuned_label: str | None = None,
    judge: JudgeSetup | None = None,
) -> DiffResult:
    """Compare two evals of the same items; write stats.json, pairs.jsonl and report.html.

    With `judge`, the pairwise judge compares each item's two outputs (stats["judge"], and a
    `judge` verdict per pair). Never raises on a failed gate: the result says whether it passed
    and the caller decides.
    """
    base_dir, tuned_dir, out_dir = Path(base_dir), Path(tuned_dir), Path(out_dir)
    if not 0.0 < alpha < 1.0:
        raise StudioError("alpha must be between 0 and 1", where="gate.alpha")
    if require not in REQUIRES:
        raise StudioError(f"unknown gate requirement '{require}'", where="gate.require",
                          hint="use 'better', 'not_worse' or 'none'")
    if not 0.0 <= margin < 1.0:
        raise StudioError("margin must be at least 0 and below 1", where="gate.margin")
    if per_slice and not slice_key:
        raise StudioError("a per-slice gate needs a slice key", where="gate.per_slice",
                          hint="set eval.slice_key (or --slice) or turn per_slice off")

    base_summary, tuned_summary = _read_summary(base_dir), _read_summary(tuned_dir)
    base_rows, tuned_rows = _read_outputs(base_dir), _read_outputs(tuned_dir)
    _check_same_items(base_rows, tuned_rows)
    if (base_summary.get("grader") and tuned_summary.get("grader")
            and base_summary["grader"] != tuned_summary["grader"]):
        raise StudioError("the two evals were graded with different grader settings",
                          hint="run both evals with the same eval.grader section")

    order = list(base_rows)  # base file order: the eval's own stable order
    base_scores = [float(base_rows[i]["score"]) for i in order]
    tuned_scores = [float(tuned_rows[i]["score"]) for i in order]
    binary = is_binary(base_scores, tuned_scores)
    overall = _summary(base_scores, tuned_scores, binary, margin)
    verdict = verdict_for(overall, alpha)
    passed = gate_passes(verdict, require, overall["non_inferiority"]["passed"])

    slices: dict[str, dict[str, Any]] = {}
    if slice_key:
        groups: dict[str, list[int]] = {}
        for idx, item_id in enumerate(order):
            groups.setdefault(_slice_value(base_rows[item_id].get("meta"), slice_key), []).append(idx)
        for value in sorted(groups):
            idxs = groups[value]
            s = _summary([base_scores[i] for i in idxs], [tuned_scores[i] for i in idxs], binary,
                         margin)
            s["verdict"] = verdict_for(s, alpha)
            slices[value] = s
        adjusted = holm({k: v["p_value"] for k, v in slices.items()})
        for value, p in adjusted.items():  # Holm across slices: one family of tests
            slices[value]["p_value_holm"] = p
            slices[value]["verdict_holm"] = verdict_for({**slices[value], "p_value": p}, alpha)
    failed_slices = [v for v, s in slices.items() if not s["non_inferiority"]["passed"]]
    if per_slice and failed_slices:
        passed = False
    judge_stats: dict[str, Any] | None = None
    verdicts: dict[str, dict[str, Any]] = {}
    if judge is not None:  # every pair, in the eval's order; identical outputs cost no model call
        judge_stats, verdicts = run_judge(judge, [
            {"item_id": i, "prompt": base_rows[i].get("prompt") or "",
             "base": str(base_rows[i].get("output", "")),
             "tuned": str(tuned_rows[i].get("output", ""))} for i in order])
        if judge_stats["passed"] is False:
            passed = False

    stats: dict[str, Any] = {
        "overall": overall,
        "slice_key": slice_key,
        "slices": slices,
        "verdict": verdict,
        "alpha": alpha,
        "gate": {"require": require, "alpha": alpha, "margin": margin, "per_slice": per_slice,
                 "failed_slices": failed_slices if per_slice else [], "passed": passed},
        "labels": {
            "base": _label(base_label, base_summary, "base"),
            "tuned": _label(tuned_label, tuned_summary, "tuned"),
        },
        "base_eval_id": base_summary.get("eval_id"),
        "tuned_eval_id": tuned_summary.get("eval_id"),
        "dataset": base_summary.get("dataset"),
        "split": base_summary.get("split"),
        "grader": base_summary.get("grader"),
    }
    if judge_stats is not None:
        stats["judge"] = judge_stats
        if judge_stats["min_win_rate"] is not None:
            stats["gate"]["judge_min_win_rate"] = judge_stats["min_win_rate"]

    pairs: list[dict[str, Any]] = []
    report_pairs: list[dict[str, Any]] = []
    for item_id, bs, ts in zip(order, base_scores, tuned_scores):
        b_row, t_row = base_rows[item_id], tuned_rows[item_id]
        row = {
            "item_id": item_id,
            "bucket": bucket_of(bs, ts),
            "base_score": bs,
            "tuned_score": ts,
            "meta": b_row.get("meta") or {},
        }
        if item_id in verdicts:
            row["judge"] = verdicts[item_id]
        pairs.append(row)
        report_pairs.append({
            **row,
            "prompt": b_row.get("prompt") or [],
            "reference": b_row.get("reference", ""),
            "base_output": b_row.get("output", ""),
            "tuned_output": t_row.get("output", ""),
        })

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "stats.json",
                  json.dumps(stats, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    write_text_atomic(out_dir / "pairs.jsonl", _jsonl(pairs))
    report_path = out_dir / "report.html"
    write_text_atomic(report_path, render_report(stats, report_pairs))
    return DiffResult(stats=stats, verdict=verdict, gate_passed=passed, out_dir=out_dir,
                      report_path=report_path)
