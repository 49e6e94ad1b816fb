"""The real `studio` CLI end to end on the tiny model, with HOME pointed at an empty directory.

Every verb runs in a fresh interpreter exactly as a user would run it, with the example configs
from configs/ (the tiny model is imported under the name the configs use). Afterwards nothing
may have been written to the home directory, and every per-job scratch directory is gone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import make_project, studio


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    tmp = tmp_path_factory.mktemp("cli")
    proj = make_project(tmp / "proj", tickets=48)
    home = tmp / "home"
    home.mkdir()
    return {"dir": proj, "home": home, "ws": proj / "studio-workspace", "tiny": tiny_model_dir}


def run(project: dict, *args: str) -> "object":
    return studio(*args, cwd=project["dir"], home=project["home"])


def test_help_lists_every_verb(project: dict) -> None:
    res = run(project, "--help")
    assert res.returncode == 0
    for verb in ("validate", "models", "refine", "train", "eval", "diff", "run", "runs"):
        assert verb in res.stdout
    for sub in (("models", "import"), ("models", "list"), ("runs", "list"), ("runs", "show")):
        assert run(project, *sub, "--help").returncode == 0


def test_full_flow_with_separate_verbs(project: dict) -> None:
    res = run(project, "models", "import", str(project["tiny"]), "--name", "smollm2-135m-instruct")
    assert res.returncode == 0, res.stderr
    listed = json.loads(run(project, "models", "list", "--json").stdout)
    assert [m["name"] for m in listed] == ["smollm2-135m-instruct"]

    res = run(project, "refine", "configs/refine_tickets.yaml")
    assert res.returncode == 0, res.stderr
    assert "brightwave-tickets@v1" in res.stdout
    assert "rejected" in res.stdout
    listed = run(project, "datasets", "list")
    assert listed.returncode == 0 and "brightwave-tickets" in listed.stdout and "v1" in listed.stdout

    res = run(project, "train", "configs/sft_lora.yaml", "--dry-run")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["loss_mode"] == "assistant_only" and plan["config"]["train"]["lora"]["r"] == 16
    assert json.loads(run(project, "runs", "list", "--json").stdout) == []  # dry run trains nothing

    res = run(project, "train", "configs/sft_lora.yaml")
    assert res.returncode == 0, res.stderr
    (run_row,) = json.loads(run(project, "runs", "list", "--json").stdout)
    assert run_row["status"] == "succeeded"
    shown = json.loads(run(project, "runs", "show", run_row["run_id"]).stdout)
    assert shown["manifest"]["run_id"] == run_row["run_id"]

    cfg = yaml.safe_load((project["dir"] / "configs" / "eval.yaml").read_text())
    cfg["eval"]["models"] = ["smollm2-135m-instruct", run_row["run_id"]]
    (project["dir"] / "configs" / "eval_both.yaml").write_text(yaml.safe_dump(cfg))
    res = run(project, "eval", "configs/eval_both.yaml")
    assert res.returncode == 0, res.stderr
    eval_ids = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("eval ")]
    assert len(eval_ids) == 2

    res = run(project, "diff", *eval_ids, "--require", "none", "--slice", "channel")
    assert res.returncode == 0, res.stderr
    assert "verdict" in res.stdout
    report = next(project["ws"].glob("tenants/default/evals/diff-*/report.html"))
    html = report.read_text()
    assert "https://" not in html and "http://" not in html
    # a random tiny model is not better than its base: the default gate fails with exit 3
    res = run(project, "diff", *eval_ids)
    assert res.returncode == 3
    assert "gate 'better' failed" in res.stderr


def test_run_pipeline_json_summary(project: dict) -> None:
    # the tiny model under the configs' model name: the pipeline must reuse it, not import SmolLM2
    assert run(project, "models", "import", str(project["tiny"]), "--name",
               "smollm2-135m-instruct").returncode == 0
    res = run(project, "run", "configs/quickstart.yaml", "--json")
    assert res.returncode in (0, 3), res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("ttfm_seconds", "run_id", "base_score", "tuned_score", "p_value", "verdict"):
        assert key in summary
    assert summary["ttfm_seconds"] > 0
    assert summary["verdict"] in ("better", "worse", "no_difference")
    assert (res.returncode == 0) == (summary["verdict"] == "better")
    assert Path(summary["report"]).is_file()
    assert summary["dataset"].startswith("brightwave-tickets@v")


def test_run_pipeline_with_a_suite_diffs_every_task(project: dict) -> None:
    """A pipeline whose eval is a suite: every task is diffed, the guard task against not_worse,
    and the gate fails when any task's gate fails (exit 3 names the tasks)."""
    assert run(project, "models", "import", str(project["tiny"]), "--name",
               "smollm2-135m-instruct").returncode == 0
    cfg = yaml.safe_load((project["dir"] / "configs" / "quickstart.yaml").read_text())
    cfg["train"].update(epochs=1, max_steps=4)
    cfg["eval"]["suite"] = {"name": "support", "tasks": [
        {"name": "routing", "slice_keys": ["channel"]},
        {"name": "guard", "path": "builtin:guard", "guard": True, "limit": 6,
         "generation": {"max_new_tokens": 8}}]}
    cfg["gate"] = {"require": "none"}
    (project["dir"] / "configs" / "suite_pipeline.yaml").write_text(yaml.safe_dump(cfg))
    res = run(project, "run", "configs/suite_pipeline.yaml", "--json")
    assert res.returncode in (0, 3), res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    tasks = {t["task"]: t for t in summary["tasks"]}
    assert list(tasks) == ["routing", "guard"]
    assert tasks["routing"]["gate"] == "none" and tasks["routing"]["gate_passed"]
    assert tasks["guard"]["guard"] and tasks["guard"]["gate"] == "not_worse"
    assert summary["tuned_eval"] == tasks["routing"]["tuned_eval"]  # the headline is the customer task
    for t in tasks.values():
        assert Path(t["report"]).is_file() and t["base_eval"] != t["tuned_eval"]
    assert summary["gate_passed"] == tasks["guard"]["gate_passed"]
    assert (res.returncode == 0) == summary["gate_passed"]
    if res.returncode == 3:
        assert "failed tasks: guard" in res.stderr


def test_user_errors_exit_2_without_traceback(project: dict) -> None:
    res = run(project, "runs", "show", "run-does-not-exist")
    assert res.returncode == 2 and "unknown run" in res.stderr and "Traceback" not in res.stderr
    res = run(project, "models", "import", str(project["dir"] / "nowhere"), "--name", "x")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = run(project, "diff", "eval-a", "eval-b")
    assert res.returncode == 2 and "unknown eval" in res.stderr


def test_nothing_written_to_home_and_scratch_removed(project: dict) -> None:
    leftovers = sorted(str(p.relative_to(project["home"])) for p in project["home"].rglob("*"))
    assert leftovers == []
    tmp = project["ws"] / "tenants" / "default" / "tmp"
    assert tmp.is_dir() and list(tmp.iterdir()) == []
    assert oct((project["ws"] / "tenants" / "default").stat().st_mode & 0o777) == "0o700"
