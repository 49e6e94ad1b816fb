"""Tests for engine.eval.report: offline self-contained HTML, escaping, bucket order, headline numbers."""

from __future__ import annotations

import re
from typing import Any

from engine.eval.report import (
    MAX_ITEMS_PER_BUCKET,
    fmt_ci,
    fmt_p,
    fmt_pct,
    last_user_message,
    render_report,
)
from engine.eval.stats import paired_binary_summary

XSS = "<script>alert(1)</script>"


def build(buckets: dict[str, int], verdict: str = "better", slices: bool = True,
          output: str = "plain output") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    outcome = {"both_right": (1, 1), "fixed": (0, 1), "broke": (1, 0), "both_wrong": (0, 0)}
    base, tuned, pairs = [], [], []
    i = 0
    for bucket, count in buckets.items():
        for _ in range(count):
            b, t = outcome[bucket]
            base.append(b)
            tuned.append(t)
            pairs.append({
                "item_id": f"it-{i}", "bucket": bucket, "base_score": b, "tuned_score": t,
                "meta": {"topic": "billing"},
                "prompt": [{"role": "system", "content": "sys"},
                           {"role": "user", "content": f"first {i}"},
                           {"role": "assistant", "content": "ok"},
                           {"role": "user", "content": f"last user {i}"}],
                "reference": f"ref {i}", "base_output": f"{output} base {i}",
                "tuned_output": f"{output} tuned {i}",
            })
            i += 1
    overall = paired_binary_summary(base, tuned)
    stats = {
        "overall": overall,
        "slice_key": "topic" if slices else None,
        "slices": {"billing": {**overall, "verdict": verdict}} if slices else {},
        "verdict": verdict,
        "alpha": 0.01,
        "gate": {"require": "better", "alpha": 0.01, "passed": verdict == "better"},
        "labels": {"base": "base-model", "tuned": "run-123"},
        "base_eval_id": "ev-1", "tuned_eval_id": "ev-2", "dataset": "support@v1", "split": "eval",
    }
    return stats, pairs


def test_no_external_references() -> None:
    stats, pairs = build({"broke": 2, "fixed": 3, "both_wrong": 1, "both_right": 4})
    html = render_report(stats, pairs)
    lowered = html.lower()
    for needle in ("http://", "https://", 'src="//', "<link", "@import", "url(", "<script",
                   "<img", "<iframe", "src="):
        assert needle not in lowered, needle


def test_customer_text_is_escaped() -> None:
    stats, pairs = build({"broke": 1, "fixed": 1}, output=XSS)
    pairs[0]["reference"] = XSS
    pairs[0]["prompt"][-1]["content"] = XSS
    stats["labels"]["tuned"] = XSS
    html = render_report(stats, pairs)
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_broke_listed_before_fixed_before_both() -> None:
    stats, pairs = build({"both_right": 2, "fixed": 2, "both_wrong": 2, "broke": 2})
    html = render_report(stats, pairs)
    positions = [html.index(f'id="bucket-{b}"') for b in ("broke", "fixed", "both_wrong", "both_right")]
    assert positions == sorted(positions)
    # the broke items themselves come before the fixed ones
    assert html.index("last user 6") < html.index("last user 2")


def test_headline_numbers_match_stats() -> None:
    stats, pairs = build({"both_right": 7, "fixed": 11, "broke": 1, "both_wrong": 3})
    html = render_report(stats, pairs)
    o = stats["overall"]

    def by_id(element_id: str) -> str:
        m = re.search(rf'id="{element_id}">([^<]*)<', html)
        assert m, element_id
        return m.group(1)

    assert by_id("base-score") == fmt_pct(o["base_score"]) == f"{100 * 8 / 22:.1f}%"
    assert by_id("tuned-score") == fmt_pct(o["tuned_score"]) == f"{100 * 18 / 22:.1f}%"
    assert by_id("base-ci") == fmt_ci(o["base_ci"])
    assert by_id("tuned-ci") == fmt_ci(o["tuned_ci"])
    assert by_id("p-value") == fmt_p(o["p_value"])
    assert by_id("test") == "mcnemar_exact"
    assert by_id("n") == "22"
    for bucket, count in (("broke", 1), ("fixed", 11), ("both_wrong", 3), ("both_right", 7)):
        assert by_id(f"count-{bucket}") == str(count)
    verdict_block = html[html.index('id="verdict"'):html.index('class="cards"')]
    assert "better" in html[html.index('class="verdict'):html.index('id="verdict"')]
    assert "Tuned model is better" in verdict_block
    assert "gate passed" in verdict_block


def test_verdict_classes() -> None:
    for verdict, text in (("worse", "Tuned model is worse"), ("no_difference", "No significant difference")):
        stats, pairs = build({"broke": 1}, verdict=verdict)
        html = render_report(stats, pairs)
        assert f'class="verdict {verdict}"' in html and text in html
        assert "gate FAILED" in html


def test_items_show_last_user_message_and_texts() -> None:
    stats, pairs = build({"fixed": 1})
    html = render_report(stats, pairs)
    assert "last user 0" in html and "first 0" not in html
    assert "ref 0" in html and "plain output base 0" in html and "plain output tuned 0" in html


def test_slice_table_only_when_slices() -> None:
    stats, pairs = build({"fixed": 1}, slices=True)
    assert 'id="slices"' in render_report(stats, pairs)
    stats, pairs = build({"fixed": 1}, slices=False)
    assert 'id="slices"' not in render_report(stats, pairs)


def test_bucket_listing_is_capped() -> None:
    stats, pairs = build({"both_right": MAX_ITEMS_PER_BUCKET + 5})
    html = render_report(stats, pairs)
    assert f"Showing the first {MAX_ITEMS_PER_BUCKET} of {MAX_ITEMS_PER_BUCKET + 5}" in html
    assert html.count('<div class="item">') == MAX_ITEMS_PER_BUCKET


def test_last_user_message() -> None:
    assert last_user_message("text") == "text"
    assert last_user_message([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == "a"
    assert last_user_message([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]) == "hi"
    assert last_user_message([]) == ""


def test_report_from_diff_is_offline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from engine.eval.diff import diff_evals

    for name, score in (("base", 1.0), ("tuned", 0.0)):
        d = tmp_path / name
        d.mkdir()
        row = {"item_id": "i1", "item_hash": "h1", "prompt": [{"role": "user", "content": "q"}],
               "reference": "r", "output": XSS, "score": score, "meta": {}}
        (d / "outputs.jsonl").write_text(json.dumps(row) + "\n")
        (d / "summary.json").write_text(json.dumps({"eval_id": name, "model_ref": name}))
    res = diff_evals(tmp_path / "base", tmp_path / "tuned", tmp_path / "out")
    html = res.report_path.read_text()
    assert XSS not in html and "&lt;script&gt;" in html
    assert "http://" not in html and "https://" not in html
    assert html.index('id="bucket-broke"') < html.index('id="bucket-fixed"')
