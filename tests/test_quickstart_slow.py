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
