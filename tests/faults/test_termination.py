"""Fault injection: SIGTERM (docker stop, systemd, Slurm) and SIGKILL in the middle of a real
`studio refine` of an encrypted tenant, and what the next command finds.

After SIGTERM: exit 143, the job audited as interrupted, the tenant's folder sealed again (no
symlink to the plaintext view, the view wiped), no scratch directory, no dataset version, and the
audit chain verifies. After SIGKILL (which nothing can handle): the next job seals the surviving
view back and sweeps the dead job's scratch directory; nothing plaintext stays behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, make_project, studio, studio_popen


def _project(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    proj = make_project(tmp_path / "proj", tickets=3000)
    ws = proj / "studio-workspace"
    ws.mkdir(exist_ok=True)
    (ws / "privacy.yaml").write_text("tenants: {default: {encryption: true}}\n")
    env = {"STUDIO_VIEW_DIR": str(tmp_path / "views"), "STUDIO_CONFIG_DIR": str(tmp_path / "cfg"),
           "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    assert studio("privacy", "enable", cwd=proj, env=env).returncode == 0
    cfg = yaml.safe_load((proj / "configs" / "refine_tickets.yaml").read_text())
    cfg["refine"]["workers"] = 2
    (proj / "configs" / "refine_tickets.yaml").write_text(yaml.safe_dump(cfg))
    return proj, env, ws


def _start_refine(proj: Path, env: dict[str, str], ws: Path) -> subprocess.Popen:
    proc = studio_popen(["refine", "configs/refine_tickets.yaml"], proj, env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tenant = ws / "tenants" / "default"
    deadline = time.monotonic() + 120
    while not (tenant.is_symlink() and any((tenant / "tmp").glob("job-*"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the refine never opened its view"
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the work
    assert proc.poll() is None, "the refine finished before the signal: make the input larger"
    return proc


def _plaintext_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".sealed")
            and p.name != "privacy.yaml" and "audit" not in p.parts and p.suffix != ".sqlite"
            and not p.name.endswith((".lock", "-wal", "-shm", "-journal"))]


def test_sigterm_mid_refine_of_an_encrypted_tenant(tmp_path: Path) -> None:
    proj, env, ws = _project(tmp_path)
    proc = _start_refine(proj, env, ws)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err, err
    assert "plaintext view wiped" in err
    tenant = ws / "tenants" / "default"
    assert tenant.is_dir() and not tenant.is_symlink()
    assert not (ws / "tenants" / ".store-default").exists()
    assert [p for p in (tmp_path / "views").rglob("*") if p.is_file()] == []
    assert list((tenant / "tmp").iterdir()) == []  # no scratch, no lock
    assert not (tenant / "datasets").exists() or not any((tenant / "datasets").rglob("v*"))
    assert _plaintext_files(tenant) == []
    log = [json.loads(line) for line in (ws / "audit" / "audit.jsonl").read_text().splitlines()
           if line.strip()]
    assert log[-1]["action"] == "refine.interrupted", log[-1]["ids"]
    assert log[-1]["ids"]["error"] == "Terminated"
    assert studio("audit", "verify", cwd=proj, env=env).returncode == 0


def test_sigkill_mid_refine_is_repaired_by_the_next_job(tmp_path: Path) -> None:
    proj, env, ws = _project(tmp_path)
    proc = _start_refine(proj, env, ws)
    proc.kill()
    proc.communicate(timeout=60)
    tenant = ws / "tenants" / "default"
    assert tenant.is_symlink()  # what SIGKILL leaves: the plaintext view, the scratch dir
    views = [p for p in (tmp_path / "views").rglob("*") if p.is_file()]
    assert views
    # the dead job's lock is released by the kernel: the next job seals the view back and
    # sweeps the scratch directory (old enough to be judged)
    scratch = [p for p in (Path(os.readlink(tenant)) / "tmp").glob("job-*") if p.is_dir()]
    assert scratch
    past = time.time() - 60
    for p in scratch:
        os.utime(p, (past, past))
    res = studio("refine", "configs/refine_tickets.yaml", cwd=proj, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "recovered" in res.stderr
    assert not tenant.is_symlink()
    assert [p for p in (tmp_path / "views").rglob("*") if p.is_file()] == []
    assert list((tenant / "tmp").iterdir()) == []
    assert _plaintext_files(tenant) == []
    assert studio("audit", "verify", cwd=proj, env=env).returncode == 0


@pytest.mark.parametrize("kill", [True, False])
def test_scratch_sweep_keeps_live_jobs(tmp_path: Path, kill: bool) -> None:
    """A job holding its scratch directory keeps it; once its process is dead, the sweep
    removes it (directory and lock)."""
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws").ensure()
    code = ("import sys, time; from engine.workspace import Workspace\n"
            f"ws = Workspace({str(ws.root)!r})\n"
            "with ws.job_tmp('acme') as p:\n"
            "    (p / 'cache.bin').write_bytes(b'x' * 1000); print(p.name, flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        name = child.stdout.readline().strip()
        assert name.startswith("job-")
        assert ws.sweep_scratch("acme", min_age_s=0) == []  # alive: kept
        assert (ws.tmp_dir("acme") / name / "cache.bin").exists()
        if kill:
            child.kill()
        else:
            child.terminate()  # no session() in this child: SIGTERM kills it like SIGKILL
        child.wait(timeout=30)
        assert ws.sweep_scratch("acme", min_age_s=0) == [name]
        assert list(ws.tmp_dir("acme").iterdir()) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


_SIGNAL_IN_POOL_START = """
import multiprocessing, os, signal, sys
import multiprocessing.process as mpp
from engine.data import record_workers
from engine.privacy import jobs

start = mpp.BaseProcess.start
def start_then_signal(self):
    start(self)
    os.kill(os.getpid(), signal.{sig})  # right after the first worker, inside Pool()
    mpp.BaseProcess.start = start
mpp.BaseProcess.start = start_then_signal
try:
    with jobs.session():
        list(record_workers.run(iter([]), None, workers=2))  # no records: the pool alone
except KeyboardInterrupt as e:  # before this process exits, every worker is gone
    print(type(e).__name__, len(multiprocessing.active_children()), flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_while_the_workers_start_leaves_none_behind(sig: str) -> None:
    """Cut inside `Pool()`, the half-started workers were left running until the interpreter's
    exit, which removes their semaphores before it stops them: a worker still starting then died
    with a traceback. The signal is now held until the pool exists, so the pool is stopped and
    joined like on any other interruption, before the command exits."""
    res = subprocess.run([sys.executable, "-c", _SIGNAL_IN_POOL_START.format(sig=sig)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.stdout.split() == ["Terminated" if sig == "SIGTERM" else "KeyboardInterrupt", "0"], res
    assert "Traceback" not in res.stderr, res.stderr
