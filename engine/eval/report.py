"""The eval diff report: one self-contained offline HTML page (inline CSS and SVG, no scripts).

render_report(stats, pairs) turns what engine/eval/diff.py computed into the page a reviewer reads
top to bottom: the verdict and the gate (what was required, and why it passed or failed), both
scores with their confidence intervals, a forest plot of tuned − base (overall and per slice)
against the non-inferiority margin, the per-slice table, the minimum detectable effect, the
pairwise judge's summary when there is one, and every item in its bucket — broke first — with
the base and tuned outputs side by side and a word diff between them (engine/eval/worddiff.py).

Every value in `stats` that can be unknown (an interval bound, the MDE, a judge rate) renders as
"—". All customer text goes through Jinja's autoescape or markupsafe: it is shown, never run.
The page links to stats.json and pairs.jsonl by relative path (they sit in the same directory).
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import jinja2

from engine.eval.worddiff import render_sides
from engine.records import message_text

TEMPLATE = "report.html.jinja"
BUCKET_ORDER = ("broke", "fixed", "both_wrong", "both_right")
BUCKET_TITLES = {
    "broke": "Broke: base right, tuned wrong",
    "fixed": "Fixed: base wrong, tuned right",
    "both_wrong": "Both wrong",
    "both_right": "Both right",
}
OPEN_BUCKETS = ("broke",)
TEST_TITLES = {
    "mcnemar_exact": "exact McNemar test, two-sided",
    "paired_permutation": "paired permutation test, two-sided",
}
MAX_ITEMS_PER_BUCKET = 200
MAX_TEXT_CHARS = 4000
MAX_RATIONALE_CHARS = 1000
NA = "—"
MINUS = "\u2212"


# ------------------------------------------------------------------------------------ formatting
def _num(x: Any) -> float | None:
    """A finite float, or None for None / NaN / ±inf / anything not a number."""
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _signed(x: float, decimals: int = 1) -> str:
    text = f"{x:+.{decimals}f}"
    return text.replace("-", MINUS)


def fmt_pct(x: Any) -> str:
    """0.625 → '62.5%'; unknown → '—'."""
    f = _num(x)
    return NA if f is None else f"{100.0 * f:.1f}%".replace("-", MINUS)


def fmt_ci(ci: Any) -> str:
    """[0.55, 0.68] → '[55.0%, 68.0%]'; an unknown bound shows as '—'."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return NA
    if _num(ci[0]) is None and _num(ci[1]) is None:
        return NA
    return f"[{fmt_pct(ci[0])}, {fmt_pct(ci[1])}]"


def fmt_p(p: Any) -> str:
    """p-values: 4 decimals, scientific notation below 1e-4."""
    f = _num(p)
    if f is None:
        return NA
    return f"{f:.2e}" if 0.0 < f < 1e-4 else f"{f:.4f}"


def fmt_diff(d: Any) -> str:
    """+0.05 → '+5.0 pts' (percentage points; the minus sign is U+2212)."""
    f = _num(d)
    return NA if f is None else f"{_signed(100.0 * f)} pts"


def fmt_diff_ci(ci: Any) -> str:
    """[-0.021, 0.12] → '[−2.1, +12.0] pts'; an unknown bound shows as '—'."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return NA
    lo, hi = _num(ci[0]), _num(ci[1])
    if lo is None and hi is None:
        return NA
    parts = [NA if v is None else _signed(100.0 * v) for v in (lo, hi)]
    return f"[{parts[0]}, {parts[1]}] pts"


def fmt_pts(x: Any) -> str:
    """A magnitude in points: 0.02 → '2.0 pts'."""
    f = _num(x)
    return NA if f is None else f"{100.0 * f:.1f} pts"


def fmt_score(x: Any) -> str:
    """One item's score: 1 / 0 for binary scores, two decimals otherwise."""
    f = _num(x)
    if f is None:
        return NA
    return str(int(f)) if f in (0.0, 1.0) else f"{f:.2f}"


def fmt_prob(x: Any) -> str:
    """A probability: 0.7312 → '0.73'."""
    f = _num(x)
    return NA if f is None else f"{f:.2f}"


def fmt_alpha(x: Any) -> str:
    f = _num(x)
    return NA if f is None else f"{f:g}"


# --------------------------------------------------------------------------------- prompt text
def last_user_message(prompt: Any) -> str:
    """The content of the last user message of a chat prompt (or the prompt itself if text)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        for msg in reversed(prompt):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return message_text(msg.get("content"))
    return ""


def _clip_parts(text: Any, limit: int = MAX_TEXT_CHARS) -> tuple[str, str]:
    """(the first `limit` characters, a note saying how many were left out or '')."""
    text = message_text(text)
    if len(text) > limit:
        return text[:limit], f"… ({len(text) - limit} more characters)"
    return text, ""


def _clip(text: Any) -> str:
    head, note = _clip_parts(text)
    return f"{head}\n{note}" if note else head


# ------------------------------------------------------------------------------------ the gate
def _ni_reason(what: str, ni: Any, margin: float | None) -> tuple[bool, str]:
    """(passed, why) for one non-inferiority decision."""
    ni = ni if isinstance(ni, dict) else {}
    m = _num(ni.get("margin"))
    m = m if m is not None else (_num(margin) or 0.0)
    low = _num(ni.get("low"))
    bound = f"{MINUS}{fmt_pts(m)}"
    if low is None:
        return False, (f"{what}: the lower bound is unknown (n = {ni.get('n', NA)}), so "
                       "non-inferiority cannot be shown")
    if ni.get("passed"):
        return True, f"{what} non-inferior: lower bound {fmt_diff(low)} > {bound}"
    op = "<" if low < -m else "≤"
    return False, f"{what} not non-inferior: lower bound {fmt_diff(low)} {op} {bound}"


def gate_summary(stats: dict[str, Any]) -> dict[str, Any] | None:
    """What the gate required, whether it passed, and the reasons [(ok, text)] behind it."""
    gate = stats.get("gate") or {}
    if not gate:
        return None
    overall = stats.get("overall") or {}
    slices = stats.get("slices") or {}
    require = gate.get("require")
    alpha = gate.get("alpha", stats.get("alpha"))
    margin = _num(gate.get("margin"))
    p, diff = overall.get("p_value"), overall.get("difference")
    test = TEST_TITLES.get(str(overall.get("test")), str(overall.get("test") or "paired test"))
    verdict = stats.get("verdict")
    reasons: list[tuple[bool, str]] = []
    if require == "better":
        required = (f"the tuned model significantly better than the base overall "
                    f"({test}, p < α = {fmt_alpha(alpha)})")
        a = fmt_alpha(alpha)
        if verdict == "better":
            reasons.append((True, f"overall: tuned is significantly better: p = {fmt_p(p)} < "
                                  f"α = {a}, difference {fmt_diff(diff)}"))
        elif verdict == "worse":
            reasons.append((False, f"overall: tuned is significantly worse: p = {fmt_p(p)} < "
                                   f"α = {a}, difference {fmt_diff(diff)}"))
        else:
            reasons.append((False, f"overall: not significantly better: p = {fmt_p(p)}, needed "
                                   f"p < α = {a} (difference {fmt_diff(diff)})"))
    elif require == "not_worse":
        required = (f"the tuned model not worse than the base by more than the margin of "
                    f"{fmt_pts(margin)}: the lower bound of the 95% CI of tuned − base above "
                    f"{MINUS}{fmt_pts(margin)}")
        reasons.append(_ni_reason("overall", overall.get("non_inferiority"), margin))
    elif require == "none":
        required = "nothing (report only): this gate always passes"
    else:
        required = str(require)
    if gate.get("per_slice"):
        key = stats.get("slice_key") or "slice"
        bound = f"{MINUS}{fmt_pts(margin)}"
        required += (f"; and in every slice of {key}, tuned not worse than base by more than "
                     f"{fmt_pts(margin)} (lower bound of the 95% CI above {bound})")
        failed = [name for name in gate.get("failed_slices") or []]
        for name in failed:
            ni = (slices.get(name) or {}).get("non_inferiority")
            reasons.append(_ni_reason(f"slice {name}", ni, margin))
        if not failed and slices:
            reasons.append((True, f"all {len(slices)} slices non-inferior (every lower bound "
                                  f"above {MINUS}{fmt_pts(margin)})"))
    judged = _judge_reason(stats)
    if judged is not None:
        required += f"; and {judged[0]}"
        reasons.append(judged[1])
    return {"require": require, "required": required, "passed": bool(gate.get("passed")),
            "reasons": reasons}


def mde_sentence(overall: dict[str, Any]) -> str:
    """'With N items a difference below X points cannot be detected …' (or why it is unknown)."""
    n = overall.get("n", 0)
    mde = _num(overall.get("mde"))
    binary = overall.get("test") == "mcnemar_exact"
    power, alpha = _num(overall.get("mde_power")), overall.get("mde_alpha")
    if mde is None:
        why = ("no item changed outcome between the two models" if binary
               and not (overall.get("fixed") or overall.get("broke")) else "too few items")
        return f"With {n} items the minimum detectable difference is unknown (—): {why}."
    kind = "a difference" if binary else "a mean score difference"
    text = (f"With {n} items {kind} below {100.0 * mde:.1f} points cannot be reliably detected "
            f"({NA if power is None else f'{100.0 * power:g}%'} power, "
            f"two-sided α = {fmt_alpha(alpha)}")
    if binary and _num(overall.get("discordant_rate")) is not None:
        text += f", at the observed rate of changed outcomes, {fmt_pct(overall['discordant_rate'])}"
    text += ")."
    diff = _num(overall.get("difference"))
    if diff is not None and abs(diff) < mde:
        text += (" The observed difference is below it: a larger suite is needed before "
                 "“no significant difference” can mean “no difference”.")
    return text


# ---------------------------------------------------------------------------------- forest plot
PLOT_W, PLOT_LEFT, PLOT_RIGHT, ROW_H, PLOT_TOP, PLOT_BOTTOM = 760, 160, 200, 26, 34, 30
TICK_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5)


def _forest_row(label: str, s: dict[str, Any], kind: str) -> dict[str, Any]:
    ni = s.get("non_inferiority") if isinstance(s.get("non_inferiority"), dict) else {}
    ci = s.get("diff_ci") if isinstance(s.get("diff_ci"), (list, tuple)) else [None, None]
    low = _num(ni.get("low")) if ni else _num(ci[0])
    high = _num(ni.get("high")) if ni else _num(ci[1])
    diff = _num(ni.get("diff")) if ni else None
    diff = diff if diff is not None else _num(s.get("difference"))
    status = "neutral" if not ni else ("pass" if ni.get("passed") else "fail")
    short = label if len(label) <= 22 else label[:21] + "…"
    return {"label": label, "short": short, "kind": kind,
            "low": low, "high": high, "diff": diff, "status": status,
            "text": f"{fmt_diff(diff)} {fmt_diff_ci([low, high])}".replace(" pts [", " ["),
            "n": s.get("n")}


def forest_plot(stats: dict[str, Any]) -> dict[str, Any]:
    """Geometry of the inline-SVG forest plot: one row per estimate (overall, then each slice),
    its 95% CI of tuned − base, the zero line and the −margin line. x in SVG units."""
    overall = stats.get("overall") or {}
    gate = stats.get("gate") or {}
    margin = _num(gate.get("margin"))
    if margin is None:
        margin = _num((overall.get("non_inferiority") or {}).get("margin"))
    rows = [_forest_row("All items", overall, "overall")]
    rows += [_forest_row(str(name), s, "slice") for name, s in (stats.get("slices") or {}).items()]
    values = [0.0] + ([-margin] if margin is not None else [])
    values += [v for r in rows for v in (r["low"], r["high"], r["diff"]) if v is not None]
    lo, hi = min(values), max(values)
    span = max(hi - lo, 0.1)
    lo, hi = max(-1.0, lo - 0.08 * span), min(1.0, hi + 0.08 * span)
    x0, x1 = PLOT_LEFT, PLOT_W - PLOT_RIGHT

    def x(v: float) -> float:
        return round(x0 + (v - lo) / (hi - lo) * (x1 - x0), 1)

    step = next((s for s in TICK_STEPS if (hi - lo) / s <= 8), 0.5)
    ticks, t = [], math.ceil(lo / step) * step
    while t <= hi + 1e-9:
        ticks.append({"x": x(t), "label": "0" if abs(t) < 1e-9 else _signed(100.0 * t, 0)})
        t += step
    for i, r in enumerate(rows):
        r["y"] = PLOT_TOP + i * ROW_H + ROW_H // 2
        r["x_low"] = x(r["low"]) if r["low"] is not None else x0
        r["x_high"] = x(r["high"]) if r["high"] is not None else x1
        r["open_low"], r["open_high"] = r["low"] is None, r["high"] is None
        r["x_diff"] = x(r["diff"]) if r["diff"] is not None else None
    height = PLOT_TOP + len(rows) * ROW_H + PLOT_BOTTOM
    return {"width": PLOT_W, "height": height, "x0": x0, "x1": x1, "top": PLOT_TOP - 6,
            "bottom": PLOT_TOP + len(rows) * ROW_H, "rows": rows, "ticks": ticks,
            "zero": x(0.0), "margin": margin,
            "margin_x": x(-margin) if margin is not None and margin > 0 else None,
            "margin_label": f"{MINUS}margin ({MINUS}{100.0 * margin:.1f})" if margin else ""}


# --------------------------------------------------------------------------------------- items
def _scores(pair: dict[str, Any]) -> tuple[Any, Any]:
    scores = pair.get("scores") if isinstance(pair.get("scores"), dict) else {}
    return (pair.get("base_score", scores.get("base")),
            pair.get("tuned_score", scores.get("tuned")))


def _judge(pair: dict[str, Any]) -> dict[str, Any] | None:
    j = pair.get("judge")
    if not isinstance(j, dict):
        return None
    rationale, note = _clip_parts(j.get("rationale") or "", MAX_RATIONALE_CHARS)
    by_order = j.get("p_tuned_by_order")
    by_order = by_order if isinstance(by_order, (list, tuple)) and len(by_order) == 2 else None
    return {"winner": str(j.get("winner") or "tie"), "consistent": j.get("consistent"),
            "identical": bool(j.get("identical")),
            "p_base_first": fmt_prob(by_order[0]) if by_order else None,
            "p_tuned_first": fmt_prob(by_order[1]) if by_order else None,
            "rationale": f"{rationale} {note}".strip()}


def _item(pair: dict[str, Any]) -> dict[str, Any]:
    base, base_note = _clip_parts(pair.get("base_output", ""))
    tuned, tuned_note = _clip_parts(pair.get("tuned_output", ""))
    base_html, tuned_html = render_sides(base, tuned)
    b, t = _scores(pair)
    meta = pair.get("meta") if isinstance(pair.get("meta"), dict) else {}
    return {
        "item_id": str(pair.get("item_id", "")),
        "meta": meta,
        "scores": f"{fmt_score(b)} → {fmt_score(t)}",
        "user": _clip(last_user_message(pair.get("prompt"))),
        "reference": _clip(pair.get("reference", "")),
        "base_html": base_html, "base_note": base_note,
        "tuned_html": tuned_html, "tuned_note": tuned_note,
        "identical": (message_text(pair.get("base_output", ""))
                      == message_text(pair.get("tuned_output", ""))),
        "judge": _judge(pair),
    }


# ------------------------------------------------------------------------------------ rendering
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=fmt_pct, ci=fmt_ci, pval=fmt_p, diff=fmt_diff, diffci=fmt_diff_ci,
                       pts=fmt_pts, alpha=fmt_alpha)
    return env


def _template() -> jinja2.Template:
    source = resources.files("engine.eval").joinpath("templates", TEMPLATE).read_text("utf-8")
    return _environment().from_string(source)


def _judge_summary(stats: dict[str, Any]) -> dict[str, Any] | None:
    j = stats.get("judge")
    if not isinstance(j, dict):
        return None
    return {"consistency": fmt_pct(j.get("consistency_rate")),
            "tuned_wins": j.get("tuned_wins", NA), "base_wins": j.get("base_wins", NA),
            "ties": j.get("ties", NA), "win_rate": fmt_pct(j.get("tuned_win_rate")),
            "win_rate_ci": fmt_ci(j.get("win_rate_ci")), "sign_p": fmt_p(j.get("sign_test_p")),
            "identical": j.get("n_identical", NA), "judged": j.get("n_judged", NA),
            "inconsistent": j.get("inconsistent", NA), "model": str(j.get("model") or NA),
            "min_win_rate": fmt_pct(j.get("min_win_rate"))
            if j.get("min_win_rate") is not None else None}


def _judge_reason(stats: dict[str, Any]) -> tuple[str, tuple[bool, str]] | None:
    """(what the judge gate required, (passed, why)) when the judge has a min_win_rate."""
    j = stats.get("judge")
    if not isinstance(j, dict) or _num(j.get("min_win_rate")) is None:
        return None
    need = fmt_pct(j["min_win_rate"])
    ci = j.get("win_rate_ci") if isinstance(j.get("win_rate_ci"), (list, tuple)) else [None, None]
    low = fmt_pct(ci[0] if ci else None)
    required = (f"the pairwise judge's tuned win rate at least {need}: the lower bound of its 95% "
                "Wilson interval")
    if j.get("passed"):
        return required, (True, f"judge: tuned win rate {fmt_pct(j.get('tuned_win_rate'))}, "
                                f"lower bound {low} ≥ {need}")
    return required, (False, f"judge: tuned win rate {fmt_pct(j.get('tuned_win_rate'))}, "
                             f"lower bound {low} < {need}")


def render_report(stats: dict[str, Any], pairs: list[dict[str, Any]]) -> str:
    """Render the diff report. `pairs` rows carry item_id, bucket, base_score, tuned_score (or
    scores {base, tuned}), meta, the texts — prompt (chat messages or text), reference,
    base_output, tuned_output — and optionally judge {winner, consistent, identical,
    p_tuned_by_order, rationale}. `stats` may also carry judge {consistency_rate, tuned_wins,
    base_wins, ties, tuned_win_rate, win_rate_ci, sign_test_p, …} (engine/eval/judged.py)."""
    grouped: dict[str, list[dict[str, Any]]] = {b: [] for b in BUCKET_ORDER}
    for pair in pairs:
        grouped.setdefault(str(pair.get("bucket")), []).append(pair)
    buckets = []
    for name in BUCKET_ORDER:
        rows = grouped.get(name, [])
        buckets.append({
            "name": name, "title": BUCKET_TITLES[name], "total": len(rows),
            "open": name in OPEN_BUCKETS,
            "items": [_item(p) for p in rows[:MAX_ITEMS_PER_BUCKET]],
        })
    overall = stats["overall"]
    labels = stats.get("labels") or {"base": "base", "tuned": "tuned"}
    return _template().render(
        stats=stats,
        overall=overall,
        verdict=stats["verdict"],
        gate=gate_summary(stats),
        labels=labels,
        slices=stats.get("slices") or {},
        slice_key=stats.get("slice_key"),
        test_title=TEST_TITLES.get(str(overall.get("test")), str(overall.get("test"))),
        mde=mde_sentence(overall),
        forest=forest_plot(stats),
        judge=_judge_summary(stats),
        has_judge=any(isinstance(p.get("judge"), dict) for p in pairs),
        buckets=buckets,
        cap=MAX_ITEMS_PER_BUCKET,
        na=NA,
    )
