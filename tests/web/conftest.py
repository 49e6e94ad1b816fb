"""A workspace filled by real tiny refine + train + eval/diff + reproduce runs, and a real `studio ui` on loopback."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from engine.registry import Registry
from engine.serve.keys import KeyStore
from tests.helpers import ROOT, make_project
from tests.helpers import studio as _studio

STEPS = 6


def studio(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    res = _studio(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT)})
    assert res.returncode in (0, 3), f"studio {' '.join(args)}: {res.stderr}"
    return res


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    proj = make_project(tmp_path_factory.mktemp("web") / "proj", tickets=40)
    ws = proj / "studio-workspace"
    studio("models", "import", str(tiny_model_dir), "--name", "smollm2-135m-instruct", cwd=proj)
    studio("refine", "configs/refine_tickets.yaml", cwd=proj)
    cfg = yaml.safe_load((proj / "configs" / "sft_lora.yaml").read_text())
    cfg["train"].update(max_steps=STEPS, batch_size=4)
    (proj / "configs" / "web.yaml").write_text(yaml.safe_dump(cfg))
    run_id = re.search(r"run (run-[0-9a-z-]+) finished", studio("train", "configs/web.yaml", cwd=proj).stdout).group(1)
    ev = yaml.safe_load((proj / "configs" / "eval.yaml").read_text())
    ev["eval"]["models"] = ["smollm2-135m-instruct", run_id]
    (proj / "configs" / "eval_both.yaml").write_text(yaml.safe_dump(ev))
    res = studio("eval", "configs/eval_both.yaml", cwd=proj)
    eval_ids = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("eval ")]
    # a wide non-inferiority margin: the gate a random tiny model can honestly pass (TTFM needs one)
    studio("diff", *eval_ids, "--require", "not_worse", "--margin", "0.9", "--slice", "channel", cwd=proj)
    repro = studio("reproduce", run_id, cwd=proj)
    repro_id = re.search(r"run (run-[0-9a-z-]+) reproduces", repro.stdout).group(1)
    # tenant b: its own refined dataset (same name, other tenant)
    rb = yaml.safe_load((proj / "configs" / "refine_tickets.yaml").read_text())
    rb["tenant"] = "b"
    (proj / "configs" / "refine_b.yaml").write_text(yaml.safe_dump(rb))
    studio("refine", "configs/refine_b.yaml", cwd=proj)

    registry = ws / "registry.sqlite"
    finished = Registry(registry).get_run(run_id)["finished_at"]
    promoted_at = (datetime.fromisoformat(finished) + timedelta(minutes=5)).isoformat()
    # promotions and usage belong to the serving module: rows in the agreed schema stand in here
    with closing(sqlite3.connect(registry)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS served_models (tenant TEXT, name TEXT, run_id TEXT, "
                   "adapter_path TEXT, base_model TEXT, promoted_at TEXT, demoted_at TEXT, forced INT, "
                   "PRIMARY KEY(tenant, name))")
        db.execute("INSERT INTO served_models VALUES (?,?,?,?,?,?,?,?)",
                   ("default", "brightwave-triage", run_id, "adapter", "smollm2-135m-instruct",
                    promoted_at, None, 0))
        db.execute("CREATE TABLE IF NOT EXISTS usage (tenant TEXT, model TEXT, day TEXT, requests INT, "
                   "prompt_tokens INT, completion_tokens INT, errors INT, PRIMARY KEY(tenant, model, day))")
        db.executemany("INSERT INTO usage VALUES (?,?,?,?,?,?,?)", [
            ("default", "brightwave-triage", "2026-11-03", 120, 9000, 3000, 1),
            ("default", "brightwave-triage", "2026-11-20", 80, 6000, 2000, 0),
            ("b", "b-model", "2026-11-04", 7, 100, 50, 0)])
    # the real verbs above wrote the audit log (engine/privacy/audit.py); tenant b gets one entry
    from engine.privacy import audit
    from engine.workspace import Workspace

    audit.record(Workspace(ws), "refine", tenant="b", actor="key:admin",
                 ids={"dataset": "brightwave-tickets@v1"})
    keys = KeyStore(registry)
    token_a, _ = keys.create("default", "dashboard-a")
    token_b, _ = keys.create("b", "dashboard-b")
    token_admin, _ = keys.create("default", "ops", role="admin")
    diff_id = next((ws / "tenants/default/evals").glob("diff-*")).name
    return {"proj": proj, "ws": ws, "run_id": run_id, "repro_id": repro_id, "eval_ids": eval_ids,
            "diff_id": diff_id, "key_a": token_a, "key_b": token_b, "key_admin": token_admin,
            "keys": keys, "promoted_at": promoted_at}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(filled: dict[str, Any]) -> Iterator[str]:
    """The real `studio ui` in its own process on a free loopback port."""
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["PYTHONPATH"] = str(ROOT)
    log = filled["proj"] / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "ui", "--workspace", str(filled["ws"]),
                                 "--port", str(port)], cwd=filled["proj"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "studio ui did not start"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    filled["server_log"] = log.read_text()
