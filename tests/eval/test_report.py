"""Tests for engine.eval.report and engine.eval.worddiff: offline self-contained HTML, escaping,
bucket order, headline numbers, gate reasons, unknown values, judge rationales, word diff."""

from __future__ import annotations

import re
from typing import Any

import pytest

from engine.eval.report import (
    MAX_ITEMS_PER_BUCKET,
    fmt_ci,
    fmt_diff,
    fmt_diff_ci,
    fmt_p,
    fmt_pct,
    gate_summary,
    last_user_message,
    render_report,
)
from engine.eval.significance import non_inferiority, paired_binary_summary
from engine.eval.worddiff import MAX_KEY_PAIRS, render_inline, render_sides, word_diff

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
    assert "ref 0" in html
    # the outputs differ in one word: each side shows its own text with that word marked
    assert "plain output <del>base</del> 0" in html and "plain output <ins>tuned</ins> 0" in html


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


# ------------------------------------------------------------------------------ word diff
REFUND_BASE = "Your refund for order BW-1042 was issued today and arrives in 5 business days."
REFUND_TUNED = "Your refund for order BW-1042 is pending review and arrives in 10 business days."


def _sides(segments: list[tuple[str, str]]) -> tuple[str, str]:
    return ("".join(t for op, t in segments if op != "insert"),
            "".join(t for op, t in segments if op != "delete"))


def test_word_diff_known_strings() -> None:
    assert word_diff(REFUND_BASE, REFUND_TUNED) == [
        ("equal", "Your refund for order BW-1042 "),
        ("delete", "was issued today"), ("insert", "is pending review"),
        ("equal", " and arrives in "),
        ("delete", "5"), ("insert", "10"),
        ("equal", " business days."),
    ]
    # a changed phrase is one span, not word-by-word
    assert word_diff("the cat sat", "a dog sat") == [
        ("delete", "the cat"), ("insert", "a dog"), ("equal", " sat")]
    assert word_diff("Call us, or email.", "Chat with us, then reboot.") == [
        ("delete", "Call"), ("insert", "Chat with"), ("equal", " us, "),
        ("delete", "or email"), ("insert", "then reboot"), ("equal", ".")]
    assert word_diff("Restart the router now.", "Restart the router.") == [
        ("equal", "Restart the router"), ("delete", " now"), ("equal", ".")]
    assert word_diff("Reset the hub", "Reset the hub, then re-pair it") == [
        ("equal", "Reset the hub"), ("insert", ", then re-pair it")]
    assert word_diff("same text", "same text") == [("equal", "same text")]
    assert word_diff("", "") == []
    assert word_diff("", "new answer") == [("insert", "new answer")]
    assert word_diff("old answer", "") == [("delete", "old answer")]


@pytest.mark.parametrize("base,tuned", [
    (REFUND_BASE, REFUND_TUNED),
    ("  leading and trailing  ", "leading, trailing\n"),
    ("Line one.\n\nLine two:\t- reboot", "Line one.\nLine 2: - reboot the thermostat"),
    ("Ünïcode café — ok", "Unicode café — okay"),
    ("a b c d e f", "f e d c b a"),
    ("thermostat " * 40, "router " * 40),
    ("a  b\tc", "a b c"),
    ("   ", "x"),
    ("Done.\n", "Done."),
])
def test_word_diff_gives_back_both_texts(base: str, tuned: str) -> None:
    segments = word_diff(base, tuned)
    assert _sides(segments) == (base, tuned)
    for (op1, _), (op2, _) in zip(segments, segments[1:]):
        assert op1 != op2  # merged
        assert (op1, op2) != ("insert", "delete")  # delete first within a change
    assert all(text for _, text in segments)


def test_word_diff_bounds_its_work_on_repetitive_outputs() -> None:
    # a model stuck in a loop: "the" pairs up 100 × 100 times, past the budget → one change
    base, tuned = "Hello " + "the router " * 100 + "bye", "Hello " + "the thermostat " * 100 + "bye"
    assert 100 * 100 > MAX_KEY_PAIRS
    segments = word_diff(base, tuned)
    assert _sides(segments) == (base, tuned)
    assert [op for op, _ in segments] == ["equal", "delete", "insert", "equal"]
    assert segments[0] == ("equal", "Hello the ") and segments[-1] == ("equal", " bye")
    # within the budget, word by word
    segments = word_diff("the router " * 40, "the thermostat " * 40)
    assert segments[:3] == [("equal", "the "), ("delete", "router"), ("insert", "thermostat")]
    assert sum(op == "delete" for op, _ in segments) == 40
    # long ordinary answers are diffed word by word however long
    words = " ".join(f"w{i}" for i in range(700))
    assert word_diff(f"{words} end", f"q {words} end") == [("insert", "q "), ("equal", f"{words} end")]


def test_word_diff_rendering_escapes() -> None:
    base_html, tuned_html = render_sides("Use <b>bold</b> & retry", "Use <script>x</script> & retry")
    assert "<b>" not in base_html and "<script>" not in tuned_html
    assert base_html == "Use &lt;<del>b&gt;bold&lt;/b</del>&gt; &amp; retry"
    assert tuned_html == "Use &lt;<ins>script&gt;x&lt;/script</ins>&gt; &amp; retry"
    assert str(render_inline(word_diff("a <x>", "a <y>"))) == \
        "a &lt;<del>x</del><ins>y</ins>&gt;"


def test_report_marks_the_word_diff_of_each_item() -> None:
    stats, pairs = build({"broke": 1})
    pairs[0]["base_output"], pairs[0]["tuned_output"] = REFUND_BASE, REFUND_TUNED
    html = render_report(stats, pairs)
    assert "BW-1042 <del>was issued today</del> and arrives in <del>5</del> business" in html
    assert "BW-1042 <ins>is pending review</ins> and arrives in <ins>10</ins> business" in html
    stats, pairs = build({"both_right": 1})
    pairs[0]["tuned_output"] = pairs[0]["base_output"]
    html = render_report(stats, pairs)
    assert "identical outputs" in html and "<del>" not in html.split("<h2>Items")[1].split(
        'id="bucket-broke"')[1].replace("<del>struck words</del>", "")


# ---------------------------------------------------------------------- escaping and offline
def test_script_in_every_text_field_is_shown_as_text() -> None:
    stats, pairs = build({"broke": 2, "fixed": 1}, output=XSS)
    pairs[0]["tuned_output"] = f"{XSS} and <img src=x onerror=alert(2)>"
    pairs[1]["meta"] = {"topic": XSS}
    pairs[1]["item_id"] = XSS
    pairs[2]["judge"] = {"winner": "tuned", "consistent": True, "rationale": XSS}
    stats["labels"]["base"] = XSS
    stats["slices"] = {XSS: stats["slices"]["billing"]}
    stats["slice_key"] = XSS
    stats["gate"].update(per_slice=True, failed_slices=[XSS], margin=0.02)
    stats["slices"][XSS]["non_inferiority"] = {"n": 3, "diff": 0.0, "low": -0.5, "high": 0.5,
                                               "margin": 0.02, "passed": False}
    html = render_report(stats, pairs)
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "onerror=alert(2)" in html  # the attribute text is shown, inside escaped markup
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 8


def test_no_external_url_in_a_full_report() -> None:
    stats, pairs = build({"broke": 2, "fixed": 3, "both_wrong": 1, "both_right": 4})
    stats["judge"] = {"consistency_rate": 0.8, "tuned_wins": 5, "base_wins": 2, "ties": 3}
    for p in pairs:
        p["judge"] = {"winner": "base", "consistent": False, "rationale": "Reply A is polite."}
    html = render_report(stats, pairs)
    lowered = html.lower()
    for needle in ("http:", "https:", "//", "<link", "@import", "url(", "<script", "<img",
                   "<iframe", "<object", "<embed", "src=", "xmlns", "@font-face"):
        assert needle not in lowered.replace("<!doctype html>", ""), needle
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs and set(hrefs) == {"stats.json", "pairs.jsonl"}  # relative, same directory
    assert "<svg" in html and 'id="forest"' in html


# ---------------------------------------------------------------------------- unknown values
def test_unknown_values_render_as_dash() -> None:
    assert fmt_pct(None) == fmt_p(None) == fmt_diff(None) == "—"
    assert fmt_pct(float("nan")) == "—" and fmt_diff(float("inf")) == "—"
    assert fmt_ci(None) == fmt_ci([None, None]) == fmt_diff_ci([None, None]) == "—"
    assert fmt_ci([None, 0.5]) == "[—, 50.0%]"
    assert fmt_diff_ci([-0.021, None]) == "[\u22122.1, —] pts"
    assert fmt_diff_ci([-0.021, 0.12]) == "[\u22122.1, +12.0] pts"

    stats, pairs = build({"broke": 1})
    o = stats["overall"]
    o.update(base_ci=[None, None], tuned_ci=[None, 0.9], diff_ci=[None, None], mde=None,
             non_inferiority={"n": 1, "diff": -1.0, "low": None, "high": None, "margin": 0.02,
                              "passed": False})
    stats["slices"]["billing"] = {**o, "verdict": "no_difference", "p_value_holm": None}
    stats["gate"] = {"require": "not_worse", "alpha": 0.01, "margin": 0.02, "per_slice": True,
                     "failed_slices": ["billing"], "passed": False}
    html = render_report(stats, pairs)
    assert 'id="base-ci">—<' in html and 'id="tuned-ci">[—, 90.0%]<' in html
    assert 'id="diff-ci">—<' in html and 'id="mde-value">—<' in html
    assert "minimum detectable difference is unknown (—)" in html
    assert "None" not in html and "nan" not in html.lower().replace("nanosecond", "")
    assert "overall: the lower bound is unknown (n = 1)" in html
    assert 'class="ci fail open"' in html  # the forest plot draws an unbounded interval dashed


# ---------------------------------------------------------------------------------- the gate
def _ni_stats(base: list[int], tuned: list[int], require: str, margin: float,
              per_slice: bool = False) -> dict[str, Any]:
    overall = paired_binary_summary(base, tuned)
    overall["non_inferiority"] = non_inferiority(base, tuned, margin, binary=True)
    slices = {"billing": {**overall, "verdict": "no_difference", "p_value_holm": 1.0},
              "routers": {**overall, "verdict": "no_difference", "p_value_holm": 1.0}}
    failed = [k for k, v in slices.items() if not v["non_inferiority"]["passed"]] if per_slice else []
    passed = overall["non_inferiority"]["passed"] and not failed
    return {"overall": overall, "slices": slices, "slice_key": "topic", "verdict": "no_difference",
            "alpha": 0.05, "labels": {"base": "b", "tuned": "t"},
            "gate": {"require": require, "alpha": 0.05, "margin": margin, "per_slice": per_slice,
                     "failed_slices": failed, "passed": passed}}


def test_gate_explains_non_inferiority_both_ways() -> None:
    base, tuned = [1] * 95 + [0] * 5, [1] * 93 + [0] * 7  # 2 broke of 100
    low = non_inferiority(base, tuned, 0.1, binary=True)["low"]
    shown = f"{100 * low:+.1f}".replace("-", "\u2212")
    ok = gate_summary(_ni_stats(base, tuned, "not_worse", 0.10))
    assert ok is not None and ok["passed"]
    assert ok["reasons"] == [(True, f"overall non-inferior: lower bound {shown} pts > \u221210.0 pts")]
    assert "not worse than the base by more than the margin of 10.0 pts" in ok["required"]
    bad = gate_summary(_ni_stats(base, tuned, "not_worse", 0.01, per_slice=True))
    assert bad is not None and not bad["passed"]
    assert bad["reasons"] == [
        (False, f"overall not non-inferior: lower bound {shown} pts < \u22121.0 pts"),
        (False, f"slice billing not non-inferior: lower bound {shown} pts < \u22121.0 pts"),
        (False, f"slice routers not non-inferior: lower bound {shown} pts < \u22121.0 pts"),
    ]
    assert "in every slice of topic" in bad["required"]
    html = render_report(_ni_stats(base, tuned, "not_worse", 0.01, per_slice=True), [])
    assert "gate FAILED (require: not_worse)" in html
    assert f"slice routers not non-inferior: lower bound {shown} pts &lt; \u22121.0 pts" in html
    assert html.count('<td class="fail">FAIL') == 2


def test_gate_explains_better_and_none() -> None:
    stats, _ = build({"fixed": 12, "both_right": 3})
    better = gate_summary(stats)
    assert better is not None and better["passed"]
    (ok, text), = better["reasons"]
    assert ok and text.startswith("overall: tuned is significantly better: p = ")
    stats, _ = build({"fixed": 2, "broke": 1}, verdict="no_difference")
    (ok, text), = gate_summary(stats)["reasons"]  # type: ignore[index]
    assert not ok and text.startswith("overall: not significantly better: p = 1.0000, needed p < α = 0.01")
    stats["gate"] = {"require": "none", "passed": True}
    summary = gate_summary(stats)
    assert summary is not None and summary["reasons"] == [] and "always passes" in summary["required"]


def test_mde_sentence() -> None:
    stats, pairs = build({"fixed": 10, "broke": 4, "both_right": 30, "both_wrong": 6})
    html = render_report(stats, pairs)
    mde = stats["overall"]["mde"]
    assert f"With 50 items a difference below {100 * mde:.1f} points cannot be reliably detected" in html
    assert "80% power, two-sided α = 0.05" in html


# ------------------------------------------------------------------------------------- judge
def test_judge_rationales_and_consistency_when_present() -> None:
    stats, pairs = build({"broke": 1, "fixed": 1})
    html = render_report(stats, pairs)
    assert "Pairwise judge" not in html and 'class="judge"' not in html
    stats["judge"] = {"consistency_rate": 0.875, "tuned_wins": 9, "base_wins": 3, "ties": 4}
    pairs[0]["judge"] = {"winner": "base", "consistent": True,
                         "rationale": "Reply A gives the refund date <today>."}
    pairs[1]["judge"] = {"winner": "tie", "consistent": False, "rationale": None}
    html = render_report(stats, pairs)
    assert 'id="judge-consistency">87.5%<' in html
    assert 'id="judge-tuned">9<' in html and 'id="judge-base">3<' in html and 'id="judge-ties">4<' in html
    assert "Reply A gives the refund date &lt;today&gt;." in html
    assert "prefers base" in html and "the two orders disagreed: counted as a tie" in html
    stats["judge"] = {"consistency_rate": None, "tuned_wins": 0, "base_wins": 0, "ties": 2}
    assert 'id="judge-consistency">—<' in render_report(stats, pairs)


def test_continuous_scores_render() -> None:
    from engine.eval.significance import paired_continuous_summary

    base = [0.2, 0.4, 0.6, 0.3, 0.55]
    tuned = [0.5, 0.45, 0.4, 0.7, 0.9]
    overall = paired_continuous_summary(base, tuned, resamples=200)
    overall.update(score_type="continuous", fixed=2, broke=1, both_right=1, both_wrong=1,
                   non_inferiority=non_inferiority(base, tuned, 0.05, binary=False, resamples=200))
    stats = {"overall": overall, "slices": {}, "verdict": "no_difference", "alpha": 0.01,
             "gate": {"require": "not_worse", "alpha": 0.01, "margin": 0.05, "per_slice": False,
                      "failed_slices": [], "passed": False},
             "labels": {"base": "b", "tuned": "t"}}
    pairs = [{"item_id": f"i{i}", "bucket": "fixed", "base_score": b, "tuned_score": t,
              "meta": {}, "prompt": "q", "reference": "r", "base_output": "x", "tuned_output": "y"}
             for i, (b, t) in enumerate(zip(base, tuned))]
    html = render_report(stats, pairs)
    assert "paired permutation test, two-sided" in html
    assert "score 0.20 → 0.50" in html
    assert "a mean score difference below" in html
    assert "Continuous scores: “right” means a score of at least 0.5." in html
