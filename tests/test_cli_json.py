"""`--json` on every verb that prints a result, and `studio --version`: the real CLI on the tiny model.

With `--json` a verb prints exactly one JSON document on stdout (human lines and progress go to
stderr or nowhere), so scripts can rely on `json.loads(stdout)`; errors still exit 2 with one
message on stderr, and a failed gate still exits 3 after the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import engine
from tests.helpers import make_project, studio


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("cli-json")
    proj = make_project(tmp / "proj", tickets=40)
    (tmp / "home").mkdir()
    return {"dir": proj, "ws": proj / "studio-workspace", "tiny": tiny_model_dir,
            "env": {"HOME": str(tmp / "home"), "STUDIO_CONFIG_DIR": str(tmp / "keys")}}


def run(project: dict[str, Any], *args: str) -> Any:
    return studio(*args, cwd=project["dir"], env=project["env"])


def doc(project: dict[str, Any], *args: str, code: int = 0) -> Any:
    """Run a verb with --json; its whole stdout must be one JSON document."""
    res = run(project, *args, "--json")
    assert res.returncode == code, res.stderr
    return json.loads(res.stdout)


def test_version(project: dict[str, Any]) -> None:
    res = run(project, "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"studio {engine.__version__}"


def test_validate(project: dict[str, Any]) -> None:
    configs = sorted(str(p.relative_to(project["dir"])) for p in (project["dir"] / "configs").glob("*.yaml"))
    rows = doc(project, "validate", *configs)
    assert [r["file"] for r in rows] == configs and all(r["ok"] for r in rows)
    (project["dir"] / "bad.yaml").write_text("kind: train\ntrain:\n  epochs: -1\n  nonsense: 1\n")
    rows = doc(project, "validate", "configs/sft_lora.yaml", "bad.yaml", code=2)
    assert rows[0] == {"file": "configs/sft_lora.yaml", "ok": True, "kind": "train"}
    assert not rows[1]["ok"] and "bad.yaml" in rows[1]["error"] and "nonsense" in rows[1]["error"]


def test_every_verb_of_the_flow(project: dict[str, Any]) -> None:
    row = doc(project, "models", "import", str(project["tiny"]), "--name", "smollm2-135m-instruct")
    assert row["name"] == "smollm2-135m-instruct" and len(row["manifest_sha256"]) == 64
    assert [m["name"] for m in doc(project, "models", "list")] == ["smollm2-135m-instruct"]

    refined = doc(project, "refine", "configs/refine_tickets.yaml")
    assert refined["ref"] == "brightwave-tickets@v1" and refined["counts"]["train"] > 0
    assert Path(refined["card"]).is_file()
    (listed,) = doc(project, "datasets", "list")
    assert (listed["name"], listed["version"], listed["sha256"]) == ("brightwave-tickets", 1,
                                                                    refined["sha256"])

    plan = doc(project, "train", "configs/sft_lora.yaml", "--dry-run")
    assert plan["gate"] == "passed" and plan["loss_mode"] == "assistant_only"
    trained = doc(project, "train", "configs/sft_lora.yaml")
    run_id = trained["run_id"]
    assert trained["metrics"]["steps"] > 0 and Path(trained["output"]).is_dir()
    (run_row,) = doc(project, "runs", "list")
    assert run_row["run_id"] == run_id and run_row["status"] == "succeeded"
    assert doc(project, "runs", "show", run_id)["manifest"]["run_id"] == run_id
    exported = doc(project, "export", run_id)
    assert exported["kind"] == "adapter" and (Path(exported["path"]) / "manifest.json").is_file()

    cfg = yaml.safe_load((project["dir"] / "configs" / "eval.yaml").read_text())
    cfg["eval"].update(models=["smollm2-135m-instruct", run_id], limit=6)
    (project["dir"] / "configs" / "eval_both.yaml").write_text(yaml.safe_dump(cfg))
    evaluated = doc(project, "eval", "configs/eval_both.yaml")
    base, tuned = evaluated["evals"]
    assert (base["model_ref"], tuned["model_ref"]) == ("smollm2-135m-instruct", run_id)
    assert base["n"] == tuned["n"] == 6 and evaluated["dataset"] == "brightwave-tickets@v1"
    diffed = doc(project, "diff", base["eval_id"], tuned["eval_id"], "--require", "none")
    assert diffed["gate_passed"] and Path(diffed["report"]).is_file()
    assert diffed["stats"]["overall"]["n"] == 6
    # a failed gate: the JSON is still printed, and the exit code is 3
    res = run(project, "diff", base["eval_id"], base["eval_id"], "--json")
    assert res.returncode == 3 and json.loads(res.stdout)["gate_passed"] is False

    promoted = doc(project, "serve", "promote", run_id, "--name", "triage", "--force")
    assert (promoted["tenant"], promoted["name"], promoted["run_id"]) == ("default", "triage", run_id)
    assert [r["name"] for r in doc(project, "serve", "list")] == ["triage"]
    assert doc(project, "serve", "demote", "triage")["run_id"] == run_id
    assert doc(project, "serve", "list") == []

    key = doc(project, "keys", "create", "--tenant", "default")
    assert key["key"] and key["tenant"] == "default"
    assert [k["key_id"] for k in doc(project, "keys", "list")] == [key["key_id"]]
    assert doc(project, "keys", "revoke", key["key_id"]) == {"key_id": key["key_id"],
                                                             "tenant": "default", "revoked": True}

    stats = doc(project, "stats")
    assert {"ttfm", "retrain", "inferences"} <= set(stats)
    assert doc(project, "stats", "usage", "--month", "2026-01") == []

    reproduced = doc(project, "reproduce", run_id)
    assert reproduced["original"] == run_id and reproduced["passed"] is True
    assert Path(reproduced["certificate_path"]).is_file()

    assert doc(project, "audit", "verify")["ok"] is True
    head = doc(project, "audit", "head")
    assert head["seq"] > 0
    pem = doc(project, "audit", "public-key")["public_key_pem"]
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    purged = doc(project, "purge", "--run", reproduced["run_id"], "--yes")
    assert purged["certificate"]["tenant"] == "default" and Path(purged["path"]).is_file()
    checked = doc(project, "audit", "verify-certificate", purged["path"], "--public-key", pem)
    assert checked["valid"] and checked["certificate"]["certificate_id"] == \
        purged["certificate"]["certificate_id"]
    assert doc(project, "purge", "--expired") == {"certificates": []}

    enabled = doc(project, "privacy", "enable")
    assert enabled["tenant"] == "default" and enabled["files"] > 0
    assert doc(project, "privacy", "open")["files"] == enabled["files"]
    assert doc(project, "privacy", "seal", "--only", "raw")["only"] == "raw"


def test_errors_stay_on_stderr(project: dict[str, Any]) -> None:
    res = run(project, "runs", "show", "run-does-not-exist", "--json")
    assert res.returncode == 2 and res.stdout == "" and "unknown run" in res.stderr
