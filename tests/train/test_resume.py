"""`studio train --resume`: a SIGKILLed run continues to a bit-identical adapter; every refusal."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from engine.config import load_config
from engine.errors import StudioError
from engine.registry import Registry
from engine.train import resume
from engine.workspace import Workspace
from tests.helpers import make_project, studio

MAX_STEPS = 10
KILL_AT = 4  # checkpoint step after which the first attempt is killed


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A project with the tiny model imported and a refined dataset; configs/resume.yaml saves every 2 steps."""
    project = make_project(tmp_path_factory.mktemp("resume") / "proj", tickets=40)
    assert studio("models", "import", str(tiny_model_dir), "--name", "smollm2-135m-instruct",
                  cwd=project).returncode == 0
    assert studio("refine", "configs/refine_tickets.yaml", cwd=project).returncode == 0
    cfg = yaml.safe_load((project / "configs" / "sft_lora.yaml").read_text())
    cfg["train"].update(max_steps=MAX_STEPS, save_steps=2)
    cfg["train"]["lora"]["dropout"] = 0.1  # the RNG state must be restored too
    (project / "configs" / "resume.yaml").write_text(yaml.safe_dump(cfg))
    return project


def _runs(project: Path) -> Path:
    return project / "studio-workspace" / "tenants" / "default" / "runs"


def _run_id(stdout: str) -> str:
    m = re.search(r"run (run-[0-9a-z-]+) finished", stdout)
    assert m, stdout
    return m.group(1)


def _tensors(adapter: Path) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(adapter / "adapter_model.safetensors").items()}


def test_killed_run_resumes_to_a_bit_identical_adapter(project: Path) -> None:
    done = studio("train", "configs/resume.yaml", cwd=project)
    assert done.returncode == 0, done.stderr
    reference = _runs(project) / _run_id(done.stdout)

    before = set(_runs(project).iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "engine", "train", "configs/resume.yaml"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        new = [p for p in _runs(project).iterdir() if p not in before]
        if new and (new[0] / "checkpoints" / f"checkpoint-{KILL_AT}" / "trainer_state.json").is_file():
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    run_dir = new[0]
    (row,) = [r for r in json.loads(studio("runs", "list", "--json", cwd=project).stdout)
              if r["run_id"] == run_dir.name]
    assert row["status"] == "running"  # SIGKILL: nobody could record anything
    assert not (run_dir / "adapter").exists()

    resumed = studio("train", "configs/resume.yaml", "--resume", run_dir.name, cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert _run_id(resumed.stdout) == run_dir.name  # same id, same directory
    (row,) = [r for r in json.loads(studio("runs", "list", "--json", cwd=project).stdout)
              if r["run_id"] == run_dir.name]
    assert row["status"] == "succeeded"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert KILL_AT <= manifest["metrics"]["resumed_from_step"] < MAX_STEPS
    assert manifest["metrics"]["steps"] == MAX_STEPS
    assert not (run_dir / resume.MARKER).exists()

    # bit-identical to the uninterrupted run: every tensor, and the file itself
    assert _tensors(run_dir / "adapter") == _tensors(reference / "adapter")
    digest = [hashlib.sha256((d / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()
              for d in (run_dir, reference)]
    assert digest[0] == digest[1]
    # one metrics row per step: what the killed process logged after its checkpoint was dropped
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, MAX_STEPS + 1))

    again = studio("train", "configs/resume.yaml", "--resume", run_dir.name, cwd=project)
    assert again.returncode == 2 and "already succeeded" in again.stderr


# ------------------------------------------------------------------------------- refusals (fast)
@pytest.fixture
def unfinished(project: Path, tmp_path: Path) -> SimpleNamespace:
    """A registered, unfinished run with one complete and one half-written checkpoint (no training)."""
    ws = Workspace(tmp_path / "ws").ensure()
    registry = Registry(ws.registry_path)
    cfg = load_config(project / "configs" / "resume.yaml")
    run_dir = ws.run_dir("default", "run-unfinished")
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    data_info = {"ref": "brightwave-tickets@v1", "sha256": "a" * 64}
    base = {"name": "smollm2-135m-instruct", "manifest_sha256": "b" * 64}
    resume.record_inputs(run_dir, data_info, base, world_size=1)
    for step in (2, 4):
        (run_dir / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n"
                                                   for s in (1, 2, 3)))
    registry.put_run("run-unfinished", "default", "sft", base["name"], data_info["ref"], run_dir)
    return SimpleNamespace(ws=ws, registry=registry, cfg=cfg, run_dir=run_dir, data_info=data_info, base=base)


def test_plan_picks_the_last_complete_checkpoint(unfinished: SimpleNamespace) -> None:
    plan = resume.plan_resume(unfinished.cfg, unfinished.registry, "run-unfinished", None)
    assert (plan.step, plan.checkpoint.name, plan.world_size) == (2, "checkpoint-2", 1)
    resume.mark_for_resume(plan)
    assert resume.pending_checkpoint(unfinished.run_dir) == plan.checkpoint
    assert resume.reopen(unfinished.registry, "run-unfinished", unfinished.run_dir, plan.checkpoint) == 2
    assert not (unfinished.run_dir / "checkpoints" / "checkpoint-4").exists()  # half-written: removed
    rows = [json.loads(line) for line in (unfinished.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert unfinished.registry.get_run("run-unfinished")["status"] == "running"


@pytest.mark.parametrize("case, message", [
    ("unknown", "unknown run"),
    ("other_tenant", "unknown run"),
    ("succeeded", "already succeeded"),
    ("no_checkpoint", "no complete checkpoint"),
    ("config", "differs"),
    ("nproc", "not 2"),
    ("live", "still being trained"),
])
def test_resume_refusals(unfinished: SimpleNamespace, case: str, message: str) -> None:
    cfg, registry, run_id, nproc = unfinished.cfg, unfinished.registry, "run-unfinished", None
    if case == "unknown":
        run_id = "run-nope"
    elif case == "other_tenant":
        cfg = cfg.model_copy(update={"tenant": "acme"})
    elif case == "succeeded":
        registry.finish_run(run_id, "succeeded", {})
    elif case == "no_checkpoint":
        (unfinished.run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").unlink()
    elif case == "config":
        cfg = cfg.model_copy(deep=True)
        cfg.train.learning_rate = 0.5
        cfg.seed = 7
    elif case == "nproc":
        nproc = 2
    with pytest.raises(StudioError, match=message) as info:
        if case == "live":
            with resume.run_lock(unfinished.run_dir):  # as a training process holds it
                resume.plan_resume(cfg, registry, run_id, nproc)
        else:
            resume.plan_resume(cfg, registry, run_id, nproc)
    if case == "config":  # every differing field is named, old → new
        assert "train.learning_rate: 0.001 → 0.5" in info.value.what
        assert "seed: 42 → 7" in info.value.what
    if case == "other_tenant":  # nothing about the other tenant's run leaks
        assert "default" not in str(info.value)


def test_changed_inputs_are_refused(unfinished: SimpleNamespace) -> None:
    resume.check_inputs(unfinished.run_dir, unfinished.data_info, unfinished.base)
    changed = {**unfinished.data_info, "ref": "brightwave-tickets@v2", "sha256": "c" * 64}
    with pytest.raises(StudioError, match="inputs changed") as info:
        resume.check_inputs(unfinished.run_dir, changed, unfinished.base)
    assert "dataset.ref" in info.value.what and "dataset.sha256" in info.value.what


def test_recipe_that_ignores_resume_is_stopped(unfinished: SimpleNamespace) -> None:
    """A recipe that does not pass run.resume_from to trainer.train would start again from step 0."""
    from engine.train.common import ProgressCallback

    plan = resume.plan_resume(unfinished.cfg, unfinished.registry, "run-unfinished", None)
    resume.mark_for_resume(plan)
    cb = ProgressCallback(None, unfinished.run_dir / "metrics.jsonl")
    with pytest.raises(StudioError, match="cannot be resumed"):
        cb.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=10), None)
    cb.on_train_begin(None, SimpleNamespace(global_step=2, max_steps=10), None)  # resumed: fine


def test_cli_refuses_an_unknown_run(project: Path) -> None:
    res = studio("train", "configs/resume.yaml", "--resume", "run-does-not-exist", cwd=project)
    assert res.returncode == 2
    assert "unknown run 'run-does-not-exist'" in res.stderr and "Traceback" not in res.stderr
