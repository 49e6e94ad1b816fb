"""Fault injection: SIGTERM and SIGKILL at a random point of a real `studio train` (tiny model,
LoRA, encrypted tenant), SIGTERM during `studio eval` and `studio serve`, and what the next
command finds.

The random points come from a seeded generator: set STUDIO_FAULT_SEED to replay a failure (each
test prints the seed and the delay it drew). After each fault: the exit code says what happened,
the registry and the audit log say the same thing, nothing half-written is visible, the tenant's
folder holds sealed files only, no plaintext is left outside it, `studio audit verify` passes,
and the next command (a resume, a new eval) works.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.registry import Registry
from tests.helpers import ROOT, make_project, serving_url, studio, studio_popen

SEED = int(os.environ.get("STUDIO_FAULT_SEED", "1515"))
MARKER = b"Brightwave Home triage assistant"  # the refine's system prompt: in every record
MAX_STEPS, SAVE_STEPS = 60, 5  # the signal lands well before the last step


def _delay(name: str, low: float, high: float) -> float:
    """A reproducible random delay for one test (printed, so a failure can be replayed)."""
    delay = random.Random(f"{SEED}:{name}").uniform(low, high)
    print(f"fault seed {SEED} ({name}): signal {delay:.2f} s after the trigger "
          f"(replay with STUDIO_FAULT_SEED={SEED})")
    return delay


def _wait_for(proc: subprocess.Popen, ready: Any, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)


def _audit(ws: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ws / "audit" / "audit.jsonl").read_text().splitlines()
            if line.strip()]


def _plaintext_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".sealed")
            and p.name != "privacy.yaml" and "audit" not in p.parts and p.suffix != ".sqlite"
            and not p.name.endswith((".lock", "-wal", "-shm", "-journal"))]


def _files_holding(root: Path, needle: bytes, skip: tuple[Path, ...]) -> list[Path]:
    """Files under `root` (outside `skip`) whose bytes contain `needle`."""
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and not any(p.is_relative_to(s) for s in skip):
            if needle in p.read_bytes():
                found.append(p)
    return found


# ------------------------------------------------------------------------------------------ train
def _train_project(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, dict[str, str], Path]:
    """A project whose encrypted tenant holds a refined dataset; configs/ft.yaml trains the tiny
    model with LoRA for MAX_STEPS steps, a checkpoint every SAVE_STEPS."""
    proj = make_project(tmp_path / "proj", tickets=40)
    ws = proj / "studio-workspace"
    ws.mkdir()
    (ws / "privacy.yaml").write_text("tenants: {default: {encryption: true}}\n")
    env = {"STUDIO_VIEW_DIR": str(tmp_path / "views"), "STUDIO_CONFIG_DIR": str(tmp_path / "cfg"),
           "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    assert studio("privacy", "enable", cwd=proj, env=env).returncode == 0
    res = studio("models", "import", str(tiny_model_dir), "--name", "smollm2-135m-instruct",
                 cwd=proj, env=env)
    assert res.returncode == 0, res.stderr
    res = studio("refine", "configs/refine_tickets.yaml", cwd=proj, env=env)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load((proj / "configs" / "sft_lora.yaml").read_text())
    cfg["train"].update(max_steps=MAX_STEPS, save_steps=SAVE_STEPS, batch_size=4, max_seq_len=128)
    (proj / "configs" / "ft.yaml").write_text(yaml.safe_dump(cfg))
    return proj, env, ws


def _start_train(proj: Path, env: dict[str, str], ws: Path, name: str) -> tuple[subprocess.Popen, str]:
    """A real `studio train`, signalled at a random point after its first checkpoint (resume
    needs one) and before its last step; returns the process and the run id."""
    proc = studio_popen(["train", "configs/ft.yaml"], proj, env, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    runs = ws / "tenants" / "default" / "runs"
    first = f"checkpoints/checkpoint-{SAVE_STEPS}/trainer_state.json"
    try:
        _wait_for(proc, lambda: (ws / "tenants" / "default").is_symlink()
                  and any(runs.glob(f"*/{first}")), "the first checkpoint")
    except BaseException:
        proc.kill()
        raise
    (run_dir,) = [p.parent.parent.parent for p in runs.glob(f"*/{first}")]
    time.sleep(_delay(name, 0.0, 1.0))
    assert proc.poll() is None, "the run finished before the signal: raise MAX_STEPS"
    return proc, run_dir.name


def _runs(proj: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    res = studio("runs", "list", "--json", cwd=proj, env=env)
    assert res.returncode == 0, res.stderr
    return {r["run_id"]: r for r in json.loads(res.stdout)}


def _assert_sealed(tmp_path: Path, proj: Path, ws: Path) -> None:
    """The tenant's folder is sealed (no view, no store rename, no scratch, sealed files only)
    and the training text is nowhere on disk in plaintext outside the inputs and configs."""
    tenant = ws / "tenants" / "default"
    assert tenant.is_dir() and not tenant.is_symlink()
    assert not (ws / "tenants" / ".store-default").exists()
    assert [p for p in (tmp_path / "views").rglob("*") if p.is_file()] == []
    assert list((tenant / "tmp").iterdir()) == []
    assert _plaintext_files(tenant) == []
    assert _files_holding(tmp_path, MARKER, skip=(proj / "configs", proj / "data")) == []


def _resume(proj: Path, env: dict[str, str], run_id: str) -> subprocess.CompletedProcess[str]:
    res = studio("train", "configs/ft.yaml", "--resume", run_id, cwd=proj, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"run {run_id} finished: {MAX_STEPS} steps" in res.stdout, res.stdout
    row = _runs(proj, env)[run_id]
    assert row["status"] == "succeeded"
    assert row["metrics"]["resumed_from_step"] >= SAVE_STEPS
    return res


def test_sigterm_mid_train_of_an_encrypted_tenant_then_resume(tmp_path: Path,
                                                              tiny_model_dir: Path) -> None:
    proj, env, ws = _train_project(tmp_path, tiny_model_dir)
    proc, run_id = _start_train(proj, env, ws, "train-sigterm")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err, err
    assert "plaintext view wiped" in err
    assert _runs(proj, env)[run_id]["status"] == "interrupted"
    last = _audit(ws)[-1]
    assert (last["action"], last["ids"]["error"]) == ("train.interrupted", "Terminated"), last
    _assert_sealed(tmp_path, proj, ws)
    assert not (ws / "tenants" / "default" / "runs" / run_id / "manifest.json.sealed").exists()
    assert studio("audit", "verify", cwd=proj, env=env).returncode == 0

    _resume(proj, env, run_id)
    assert (ws / "tenants" / "default" / "runs" / run_id / "manifest.json.sealed").is_file()
    last = _audit(ws)[-1]
    assert (last["action"], last["ids"]["run_id"]) == ("train", run_id)
    _assert_sealed(tmp_path, proj, ws)
    assert studio("audit", "verify", cwd=proj, env=env).returncode == 0


def test_sigkill_mid_train_is_repaired_by_the_resume(tmp_path: Path, tiny_model_dir: Path) -> None:
    proj, env, ws = _train_project(tmp_path, tiny_model_dir)
    proc, run_id = _start_train(proj, env, ws, "train-sigkill")
    entries_before = len(_audit(ws))
    proc.kill()
    proc.communicate(timeout=60)
    tenant = ws / "tenants" / "default"
    # what SIGKILL leaves: the plaintext view behind the symlink, the scratch directory, a run
    # the registry still calls running, and no audit entry (nobody was left to write one)
    assert tenant.is_symlink()
    assert [p for p in (tmp_path / "views").rglob("*") if p.is_file()]
    assert _runs(proj, env)[run_id]["status"] == "running"
    assert len(_audit(ws)) == entries_before
    assert studio("audit", "verify", cwd=proj, env=env).returncode == 0
    scratch = [p for p in (Path(os.readlink(tenant)) / "tmp").glob("job-*") if p.is_dir()]
    assert scratch
    past = time.time() - 60  # old enough for the sweep to judge (it spares just-started jobs)
    for p in scratch:
        os.utime(p, (past, past))

    res = _resume(proj, env, run_id)
    assert "recovered" in res.stderr  # the surviving view was sealed back before the job
    assert _audit(ws)[-1]["action"] == "train"
    _assert_sealed(tmp_path, proj, ws)
    assert studio("audit", "verify", cwd=proj, env=env).returncode == 0


# ------------------------------------------------------------------------------------------- eval
def _eval_project(tmp_path: Path, tiny_model_dir: Path) -> Path:
    proj = make_project(tmp_path / "proj", tickets=200)
    assert studio("models", "import", str(tiny_model_dir), "--name", "smollm2-135m-instruct",
                  cwd=proj).returncode == 0
    assert studio("refine", "configs/refine_tickets.yaml", cwd=proj).returncode == 0
    cfg = yaml.safe_load((proj / "configs" / "eval.yaml").read_text())
    cfg["eval"]["generation"] = {"max_new_tokens": 64, "batch_size": 1}
    (proj / "configs" / "long_eval.yaml").write_text(yaml.safe_dump(cfg))
    cfg["eval"]["limit"] = 3
    (proj / "configs" / "short_eval.yaml").write_text(yaml.safe_dump(cfg))
    return proj


def test_sigterm_mid_eval_leaves_no_eval(tmp_path: Path, tiny_model_dir: Path) -> None:
    proj = _eval_project(tmp_path, tiny_model_dir)
    ws = proj / "studio-workspace"
    tenant = ws / "tenants" / "default"
    env = {"TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = studio_popen(["eval", "configs/long_eval.yaml"], proj, env, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    try:
        _wait_for(proc, lambda: any((tenant / "tmp").glob("job-*")), "the eval's scratch directory")
        time.sleep(_delay("eval-sigterm", 1.0, 3.0))  # loading the model or generating
        assert proc.poll() is None, "the eval finished before the signal: make it longer"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err, err
    # no eval is registered, and no eval directory (finished or partial) is left to be taken for one
    assert Registry(ws / "registry.sqlite").list_evals("default") == []
    assert not (tenant / "evals").exists() or list((tenant / "evals").iterdir()) == []
    assert list((tenant / "tmp").iterdir()) == []
    last = _audit(ws)[-1]
    assert (last["action"], last["ids"]["error"]) == ("eval.interrupted", "Terminated"), last
    assert studio("audit", "verify", cwd=proj).returncode == 0

    res = studio("eval", "configs/short_eval.yaml", "--json", cwd=proj)
    assert res.returncode == 0, res.stderr
    (done,) = json.loads(res.stdout)["evals"]
    rows = Registry(ws / "registry.sqlite").list_evals("default")
    assert [r["eval_id"] for r in rows] == [done["eval_id"]] and rows[0]["summary"]["n"] == 3
    assert sorted(p.name for p in (tenant / "evals").iterdir()) == [done["eval_id"]]
    assert _audit(ws)[-1]["action"] == "eval"
    assert studio("audit", "verify", cwd=proj).returncode == 0


def test_an_eval_stopped_while_writing_leaves_no_partial_directory(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The short window between the generations and the rename: Ctrl-C/SIGTERM there (here: in
    the proof write) must not leave `<eval_id>.partial` behind."""
    from engine.config import EvalSpec
    from engine.eval import run as eval_run
    from engine.models.store import import_model
    from engine.workspace import Workspace
    from tests.helpers import refined_dataset

    proj = make_project(tmp_path / "proj", tickets=40)
    ws = Workspace(tmp_path / "ws").ensure()
    reg = Registry(ws.registry_path)
    import_model(ws, reg, str(tiny_model_dir), "tiny")
    monkeypatch.chdir(proj)
    dataset = refined_dataset(proj, ws, reg)
    spec = EvalSpec.model_validate({"models": ["tiny"], "dataset": "brightwave-tickets",
                                    "limit": 2, "generation": {"max_new_tokens": 4},
                                    "grader": {"type": "exact_match"}, "cache": False})

    def stopped(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_run, "write_proof", stopped)
    with pytest.raises(KeyboardInterrupt):
        eval_run.run_eval(spec, ws, reg, tenant="default", model_ref="tiny", dataset=dataset)
    evals = ws.tenant_dir("default") / "evals"
    assert not evals.exists() or list(evals.iterdir()) == []
    assert reg.list_evals("default") == []


# ------------------------------------------------------------------------------------------ serve
def test_sigterm_stops_the_gateway_gracefully(tmp_path: Path, tiny_model_dir: Path) -> None:
    import httpx

    from tests.serve.conftest import TINY, make_lora, served_workspace

    adapters = {n: make_lora(tiny_model_dir, tmp_path / "adapters" / n, s) for n, s in (("a1", 1), ("a2", 2))}
    ws, keys = served_workspace(tmp_path / "ws", tiny_model_dir, adapters)
    data = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    data["serve"].update(base_model=TINY, port=0, reload_interval_s=0)
    # the request waits a second in the batcher's inbox, so it is surely in flight at the signal
    # (the tiny model can answer within the signal's delay), and is answered well within the grace
    data["serve"]["batching"]["batch_wait_ms"] = 1000
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(data))
    proc = studio_popen(["--workspace", str(ws.root), "serve", str(config)], tmp_path,
                  {"PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)},
                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    answers: list[Any] = []
    try:
        url = serving_url(proc, lines)
        assert url, "".join(lines)

        def ask() -> None:  # in flight when SIGTERM arrives: answered within the 10 s grace
            try:
                answers.append(httpx.post(
                    f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {keys['acme']}"},
                    json={"model": "support", "max_tokens": 64, "temperature": 0,
                          "messages": [{"role": "user", "content": "hello"}]}, timeout=60))
            except Exception as exc:  # reported by the assertion below
                answers.append(exc)

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(_delay("serve-sigterm", 0.05, 0.3))
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        asking.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode == 143, log
    assert "Traceback" not in log, log
    assert "gateway stopped" in log and "Application shutdown complete" in log, log
    assert "terminated (SIGTERM)" in log
    assert "Waiting for connections to close" in log  # the request was in flight at the signal
    (answer,) = answers
    assert not isinstance(answer, Exception) and answer.status_code == 200, answer
    assert answer.json()["usage"]["completion_tokens"] == 64  # a whole answer, not a cut one
    with pytest.raises(httpx.TransportError):  # nothing listens any more
        httpx.get(f"{url}/v1/models", timeout=5)
    last = _audit(ws.root)[-1]
    assert last["action"] == "serve" and last["ids"]["stopped_by"] == "SIGTERM", last
    assert list(ws.tmp_dir("default").iterdir()) == []
    assert studio("--workspace", str(ws.root), "audit", "verify", cwd=tmp_path).returncode == 0
