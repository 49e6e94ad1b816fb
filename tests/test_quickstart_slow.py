"""The quickstart on the real SmolLM2-135M-Instruct: raw logs to a LoRA model proven better (slow).

Runs `studio run configs/quickstart.yaml --json` exactly as README command 1 does (the model is
pre-imported by the session fixture, so the import is not timed twice), and requires the
tuned model to beat its base with p < 0.01 on held-out tickets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import make_project, studio


@pytest.mark.slow
def test_quickstart_proves_the_tuned_model_better(tmp_path: Path, smollm2_workspace) -> None:
    project = make_project(tmp_path / "proj", tickets=420)  # the quickstart's own sizes
    home = tmp_path / "home"
    home.mkdir()
    res = studio("--workspace", str(smollm2_workspace.root), "run", "configs/quickstart.yaml",
                 "--json", cwd=project, home=home, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["verdict"] == "better"
    assert summary["p_value"] < 0.01
    assert summary["tuned_score"] >= 0.7
    assert summary["base_score"] <= 0.1
    assert summary["n_eval"] >= 50
    assert list(home.rglob("*")) == []
    report = Path(summary["report"]).read_text()
    assert "better" in report
    print("quickstart summary:", json.dumps(summary))

    # the product loop after the quickstart: promote (the gate passed), serve, count, report
    ws = ["--workspace", str(smollm2_workspace.root)]
    promoted = studio(*ws, "serve", "promote", summary["run_id"], "--name", "triage", cwd=project,
                      home=home)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    key = studio(*ws, "keys", "create", "--tenant", "default", "--name", "qs", cwd=project,
                 home=home).stdout.strip()
    from openai import OpenAI

    from engine.config import ServeSpec
    from engine.registry import Registry
    from engine.serve.server import start_in_thread

    running = start_in_thread(ServeSpec(base_model="smollm2-135m-instruct", port=0, threads=2),
                              smollm2_workspace, Registry(smollm2_workspace.registry_path))
    try:
        client = OpenAI(base_url=f"{running.url}/v1", api_key=key, max_retries=0, timeout=300)
        for text in ("My router keeps dropping Wi-Fi.", "I was charged twice for my order."):
            answer = client.chat.completions.create(
                model="triage", messages=[{"role": "user", "content": text}], max_tokens=12,
                temperature=0)
            assert answer.choices[0].message.content
    finally:
        running.stop()
    res = studio(*ws, "stats", "--tenant", "default", "--json", cwd=project, home=home)
    assert res.returncode == 0, res.stderr[-2000:]
    stats = json.loads(res.stdout)
    ttfm = {r["project"]: r for r in stats["ttfm"]}
    row = ttfm["brightwave-tickets"]
    assert row["run_id"] == summary["run_id"] and row["seconds"] > 0
    assert row["definition"].startswith("first promotion")
    assert any(r["runs"] >= 1 for r in stats["retrain"]["per_lineage_month"])
    # one row per month: two if the requests straddle the end of a month (UTC)
    triage = [r for r in stats["inferences"] if r["model"] == "triage"]
    assert triage and sum(r["requests"] for r in triage) == 2
    print("quickstart stats:", json.dumps(stats))
