"""Ctrl-C during training: exit 130, the run is marked interrupted, scratch space is removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers import interruptible, make_project, studio


def test_sigint_during_training(tmp_path: Path, tiny_model_dir: Path) -> None:
    project = make_project(tmp_path / "proj", tickets=40)
    assert studio("models", "import", str(tiny_model_dir), "--name", "smollm2-135m-instruct",
                  cwd=project).returncode == 0
    assert studio("refine", "configs/refine_tickets.yaml", cwd=project).returncode == 0
    cfg = yaml.safe_load((project / "configs" / "sft_lora.yaml").read_text())
    cfg["train"]["max_steps"] = 100_000  # far longer than the test waits
    (project / "configs" / "long.yaml").write_text(yaml.safe_dump(cfg))

    proc = subprocess.Popen([sys.executable, "-m", "engine", "train", "configs/long.yaml"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    try:
        _interrupt(proc, project)
    finally:
        if proc.poll() is None:  # never leave a 100,000-step run behind
            proc.kill()
            proc.communicate()


def _interrupt(proc: subprocess.Popen, project: Path) -> None:
    runs = project / "studio-workspace" / "tenants" / "default" / "runs"
    deadline = time.monotonic() + 180
    while not list(runs.glob("*/metrics.jsonl")):  # training has started stepping
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, repr(err)

    (run,) = json.loads(studio("runs", "list", "--json", cwd=project).stdout)
    assert run["status"] == "interrupted"
    tmp = project / "studio-workspace" / "tenants" / "default" / "tmp"
    assert list(tmp.iterdir()) == []
    assert not (Path(run["path"]) / "manifest.json").exists()
