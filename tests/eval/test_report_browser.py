"""The diff report in a real headless Chromium: what a reviewer sees, and that the page loads nothing.

Two evals of Brightwave Home support tickets go through the real diff (engine.eval.diff); the
tuned model gains on routers and thermostats but breaks billing answers, so the overall verdict is
"better" while the per-slice gate fails on billing. Chromium (Debian's `chromium`, driven by
Playwright; scripts/setup_env.sh installs both, never a downloaded browser) opens report.html from
disk with every request routed: anything but the file itself fails the test. A screenshot goes to
test-artifacts/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.eval.diff import DiffResult, diff_evals
from engine.eval.report import fmt_p, fmt_pct
from engine.hashing import sha256_json

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("playwright is not installed (scripts/setup_env.sh installs it into .venv)",
                allow_module_level=True)
if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
    pytest.skip(f"{CHROMIUM} is missing (scripts/setup_env.sh installs Debian's chromium package)",
                allow_module_level=True)

# (topic, question, right answer, the tuned model's wrong answer on broken items)
TICKETS = {
    "billing": ("I was charged twice for order BW-{n}. Can I get the second charge back?",
                "Your refund for order BW-{n} was issued today and arrives in 5 business days.",
                "Your refund for order BW-{n} is pending review and arrives in 10 business days."),
    "routers": ("My Brightwave Mesh router {n} keeps dropping Wi-Fi every evening.",
                "Update the router firmware from the app, then move it away from the microwave.",
                "Please restart your thermostat."),
    "thermostats": ("Thermostat T{n} shows 'sensor offline' after the battery change.",
                    "Re-pair the sensor: hold its button for 5 seconds until the LED blinks blue.",
                    "Please contact your bank."),
}
# per topic: (both_right, broke, fixed, both_wrong)
OUTCOMES = {"billing": (14, 5, 1, 0), "routers": (6, 0, 12, 2), "thermostats": (8, 0, 10, 2)}
WRONG_BASE = "Thank you for contacting Brightwave Home support."


def _write_eval(directory: Path, eval_id: str, model_ref: str, rows: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True)
    lines = []
    for r in rows:
        item_hash = sha256_json({"prompt": r["prompt"], "reference": r["reference"]})
        lines.append(json.dumps({**r, "item_hash": item_hash}))
    (directory / "outputs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "summary.json").write_text(json.dumps({
        "eval_id": eval_id, "model_ref": model_ref, "dataset": "brightwave-tickets@v1",
        "split": "eval", "n": len(rows), "grader": {"type": "exact_match"}}), encoding="utf-8")
    return directory


def _evals(tmp_path: Path) -> tuple[Path, Path]:
    base_rows, tuned_rows = [], []
    for topic, counts in OUTCOMES.items():
        question, right, wrong_tuned = TICKETS[topic]
        outcomes = ([(1, 1)] * counts[0] + [(1, 0)] * counts[1] + [(0, 1)] * counts[2]
                    + [(0, 0)] * counts[3])
        for i, (b, t) in enumerate(outcomes):
            n = 1000 + i
            common = {
                "item_id": f"{topic}-{i:02d}",
                "prompt": [{"role": "system", "content": "You are Brightwave Home's support assistant."},
                           {"role": "user", "content": question.format(n=n)}],
                "reference": right.format(n=n), "meta": {"topic": topic},
            }
            base_rows.append({**common, "score": float(b),
                              "output": right.format(n=n) if b else WRONG_BASE})
            tuned_rows.append({**common, "score": float(t),
                               "output": right.format(n=n) if t else wrong_tuned.format(n=n)})
    return (_write_eval(tmp_path / "base", "ev-base", "smollm2-135m-instruct", base_rows),
            _write_eval(tmp_path / "tuned", "ev-tuned", "run-support-v2", tuned_rows))


@pytest.fixture(scope="module")
def diff(tmp_path_factory: pytest.TempPathFactory) -> DiffResult:
    tmp = tmp_path_factory.mktemp("report-browser")
    base, tuned = _evals(tmp)
    return diff_evals(base, tuned, tmp / "diff", require="better", slice_key="topic",
                      per_slice=True, margin=0.05)


@pytest.fixture(scope="module")
def seen(diff: DiffResult) -> dict[str, Any]:
    """Open the report in Chromium once; return what the page showed and every request it made."""
    url = diff.report_path.resolve().as_uri()
    requests: list[str] = []
    blocked: list[str] = []
    console_errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                          service_workers="block")

            def route(r: Any) -> None:
                if r.request.url == url:
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            context.route("**/*", route)
            page: Page = context.new_page()
            page.on("request", lambda req: requests.append(req.url))
            page.on("console", lambda msg: console_errors.append(msg.text)
                    if msg.type == "error" else None)
            page.goto(url, wait_until="load")
            page.wait_for_load_state("networkidle")
            out = _read_page(page)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "eval-diff-report.png"), full_page=True)
            out.update(requests=requests, blocked=blocked, console_errors=console_errors, url=url)
            return out
        finally:
            browser.close()


def _read_page(page: Page) -> dict[str, Any]:
    """Everything the assertions need, read as rendered text (inner_text: what a user sees)."""
    billing = page.locator("#slices tbody tr", has_text="billing")
    broke = page.locator("#bucket-broke")
    first_broke = broke.locator(".item").first
    return {
        "title": page.title(),
        "verdict": page.locator("#verdict-text").inner_text().strip(),
        "gate": page.locator("#gate").inner_text().strip(),
        "gate_reasons": page.locator("#gate-reasons li").all_inner_texts(),
        "headers": page.locator("#slices thead th").all_inner_texts(),
        "billing_rows": billing.count(),
        "billing_cells": billing.first.locator("td").all_inner_texts(),
        "bucket_order": [el.get_attribute("id") for el in page.locator("details.bucket").all()],
        "broke_open": broke.get_attribute("open") is not None,
        "broke_summary": broke.locator("summary").inner_text(),
        "broke_visible": first_broke.is_visible(),
        "broke_text": first_broke.inner_text(),
        "dels": first_broke.locator(".cell.base del").all_inner_texts(),
        "ins": first_broke.locator(".cell.tuned ins").all_inner_texts(),
        "del_visible": first_broke.locator("del").first.is_visible(),
        "ins_visible": first_broke.locator("ins").first.is_visible(),
        "forest_rows": page.locator("#forest g.row").count(),
        "forest_visible": page.locator("#forest").is_visible(),
        "margin_label": page.locator("#forest-margin").text_content(),
        "mde": page.locator("#mde").inner_text(),
        "links": [a.get_attribute("href") for a in page.locator("a").all()],
    }


def test_verdict_and_why_the_gate_failed(seen: dict[str, Any], diff: DiffResult) -> None:
    assert diff.verdict == "better" and not diff.gate_passed
    assert seen["title"] == "Eval diff: run-support-v2 vs smollm2-135m-instruct"
    assert seen["verdict"] == "Tuned model is better"
    assert seen["gate"] == "gate FAILED (require: better)"
    low = diff.stats["slices"]["billing"]["non_inferiority"]["low"]
    assert low < -0.05
    reasons = seen["gate_reasons"]
    assert any(r.startswith("overall: tuned is significantly better") for r in reasons), reasons
    shown = f"{100 * low:+.1f}".replace("-", "\u2212")
    assert f"slice billing not non-inferior: lower bound {shown} pts < \u22125.0 pts" in reasons


def test_slice_row_shows_the_right_numbers(seen: dict[str, Any], diff: DiffResult) -> None:
    s = diff.stats["slices"]["billing"]
    assert seen["billing_rows"] == 1
    cells = dict(zip(seen["headers"], seen["billing_cells"]))
    assert cells["topic"] == "billing"
    assert cells["n"] == "20"
    assert cells["base"] == "95.0%" == fmt_pct(s["base_score"])   # 19 of 20 right
    assert cells["tuned"] == "75.0%" == fmt_pct(s["tuned_score"])  # 15 of 20 right
    assert cells["diff"] == "\u221220.0 pts"
    assert (cells["fixed"], cells["broke"]) == ("1", "5")
    assert cells["p-value"] == fmt_p(s["p_value"])
    assert cells["Holm p"] == fmt_p(s["p_value_holm"])
    assert cells["non-inferior"].startswith("FAIL")


def test_broke_example_with_word_diff(seen: dict[str, Any]) -> None:
    assert seen["bucket_order"] == ["bucket-broke", "bucket-fixed", "bucket-both_wrong",
                                    "bucket-both_right"]
    assert seen["broke_open"] and seen["broke_visible"]
    assert seen["broke_summary"] == "Broke: base right, tuned wrong (5)"
    text = seen["broke_text"]
    assert "billing-14" in text and "charged twice for order BW-1014" in text
    # base said "was issued today … 5 business days", tuned "is pending review … 10 business days"
    assert seen["dels"] == ["was issued today", "5"]
    assert seen["ins"] == ["is pending review", "10"]
    assert seen["del_visible"] and seen["ins_visible"]


def test_forest_plot_mde_and_links(seen: dict[str, Any]) -> None:
    assert seen["forest_visible"] and seen["forest_rows"] == 4  # overall + 3 topics
    assert seen["margin_label"] == "\u2212margin (\u22125.0)"
    assert seen["mde"].startswith("With 60 items a difference below ")
    assert set(seen["links"]) == {"stats.json", "pairs.jsonl"}


def test_page_made_no_network_request(seen: dict[str, Any]) -> None:
    assert seen["blocked"] == []
    assert seen["requests"] == [seen["url"]]  # the file itself, nothing else
    assert seen["console_errors"] == []       # no CSP violation, no failed load
    assert (ARTIFACTS / "eval-diff-report.png").stat().st_size > 10_000
