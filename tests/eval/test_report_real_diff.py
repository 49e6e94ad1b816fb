"""A real diff of two trained tiny models, rendered in a real headless Chromium.

Two LoRA runs of the tiny test model learn twelve support tickets' queues: the "base" run learns
the right queue for the billing tickets and a wrong one for the shipping tickets, the "tuned" run
the opposite. Both are evaluated through the real suite runner (generation, exact-match grading),
`engine.eval.diff` compares them, and Chromium opens the report: the verdict, the slice table
with both slices and the "broke" bucket showing a billing ticket side by side. Nothing here is
synthetic except the training data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import StudioConfig
from engine.eval.diff import diff_evals
from engine.eval.suite import run_suite
from engine.models.store import import_model
from engine.train.launch import train_run

from tests.eval.test_report_browser import ARTIFACTS, CHROMIUM, sync_playwright  # skips there too

TOPICS = {
    "billing": ("I was charged twice for order {n}.", "Queue: BILLING", "Queue: RETURNS"),
    "shipping": ("Parcel {n} never arrived.", "Queue: SHIPPING", "Queue: HARDWARE"),
}
N_PER_TOPIC = 6


def _items() -> list[dict]:
    return [{"id": f"{t}-{n}", "prompt": q.format(n=100 + n), "ideal": right, "topic": t}
            for t, (q, right, _) in TOPICS.items() for n in range(N_PER_TOPIC)]


def _train(ws, registry, data: Path, name: str) -> str:
    cfg = StudioConfig.model_validate({
        "kind": "train", "tenant": "default", "seed": 3,
        "train": {"method": "sft", "adapter": "lora", "base_model": "tiny", "data": str(data),
                  "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "learning_rate": 3e-3,
                  "max_steps": 60, "batch_size": 4, "max_seq_len": 64, "lr_scheduler": "constant"},
    })
    return train_run(cfg, ws, registry).run_id


@pytest.fixture(scope="module")
def real_diff(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    from engine.registry import Registry
    from engine.workspace import Workspace

    tmp = tmp_path_factory.mktemp("realdiff")
    ws = Workspace(tmp / "ws").ensure()
    registry = Registry(ws.registry_path)
    import_model(ws, registry, str(tiny_model_dir), "tiny")
    items = _items()
    (tmp / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    runs = {}
    for side, right_topic in (("base", "billing"), ("tuned", "shipping")):
        rows = [{"messages": [{"role": "user", "content": i["prompt"]},
                              {"role": "assistant", "content": i["ideal"] if i["topic"] == right_topic
                               else TOPICS[i["topic"]][2]}]} for i in items]
        data = tmp / f"{side}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs[side] = _train(ws, registry, data, side)
    cfg = StudioConfig.model_validate({
        "kind": "eval", "tenant": "default", "seed": 0,
        "eval": {"models": [runs["base"], runs["tuned"]],
                 "generation": {"max_new_tokens": 24, "batch_size": 12},
                 "suite": {"name": "queues", "tasks": [
                     {"name": "routing", "path": str(tmp / "items.jsonl"),
                      "graders": [{"type": "exact_match"}], "slice_keys": ["topic"]}]}},
    })
    evals = {side: run_suite(cfg.eval, ws, registry, tenant="default", model_ref=runs[side])[0]
             for side in ("base", "tuned")}
    res = diff_evals(evals["base"].path, evals["tuned"].path, tmp / "diff", require="not_worse",
                     per_slice=True, slice_key="topic", base_label=runs["base"],
                     tuned_label=runs["tuned"])
    return {"res": res, "evals": evals, "runs": runs}


def test_real_models_learned_opposite_slices(real_diff: dict) -> None:
    stats = real_diff["res"].stats
    overall, slices = stats["overall"], stats["slices"]
    assert real_diff["evals"]["base"].score > 0 and real_diff["evals"]["tuned"].score > 0
    assert overall["broke"] >= 3 and overall["fixed"] >= 3
    assert slices["billing"]["broke"] >= 3 and slices["billing"]["fixed"] == 0
    assert slices["shipping"]["fixed"] >= 3 and slices["shipping"]["broke"] == 0
    assert stats["gate"]["failed_slices"] == ["billing"]  # billing broke: the per-slice gate fails
    assert not real_diff["res"].gate_passed


def test_report_of_a_real_diff_in_chromium(real_diff: dict) -> None:
    res = real_diff["res"]
    stats = res.stats
    url = res.report_path.resolve().as_uri()
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url == url
                   else (outside.append(route.request.url), route.abort()))
        page.goto(url)
        text = page.inner_text("body")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "diff-report-real-models.png"), full_page=True)
        browser.close()
    assert outside == []
    assert res.verdict.replace("_", " ") in text.lower() or res.verdict in text
    assert "billing" in text and "shipping" in text
    assert "broke" in text.lower()
    assert "Queue: RETURNS" in text  # the tuned model's wrong billing answer, shown side by side
    assert "Queue: BILLING" in text
