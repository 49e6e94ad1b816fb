"""`studio train --nproc 2` on CPU (torchrun, gloo, loopback): one run, ranks in sync, resume, Ctrl-C, presets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from engine.errors import StudioError
from tests.helpers import ROOT, interruptible, make_project, studio

STEPS = 8


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    project = make_project(tmp_path_factory.mktemp("multiproc") / "proj", tickets=40)
    assert studio("models", "import", str(tiny_model_dir), "--name", "smollm2-135m-instruct",
                  cwd=project).returncode == 0
    assert studio("refine", "configs/refine_tickets.yaml", cwd=project).returncode == 0
    cfg = yaml.safe_load((project / "configs" / "sft_lora.yaml").read_text())
    cfg["train"].update(max_steps=STEPS, save_steps=2)
    cfg["train"]["lora"]["dropout"] = 0.1
    (project / "configs" / "mp.yaml").write_text(yaml.safe_dump(cfg))
    cfg["train"]["max_steps"] = 100_000
    (project / "configs" / "long.yaml").write_text(yaml.safe_dump(cfg))
    return project


@pytest.fixture(scope="module")
def two_proc_run(project: Path) -> Path:
    res = studio("train", "configs/mp.yaml", "--nproc", "2", cwd=project)
    assert res.returncode == 0, res.stderr
    m = re.search(r"run (run-[0-9a-z-]+) finished", res.stdout)
    assert m and res.stdout.count("finished") == 1, res.stdout  # reported once, by the launcher
    return _runs(project) / m.group(1)


def _runs(project: Path) -> Path:
    return project / "studio-workspace" / "tenants" / "default" / "runs"


def _registry_rows(project: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in json.loads(studio("runs", "list", "--json", cwd=project).stdout)}


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_two_processes_train_one_run_with_identical_weights(project: Path, two_proc_run: Path) -> None:
    run_dir = two_proc_run
    rows = _registry_rows(project)
    assert [r["status"] for r in rows.values()] == ["succeeded"]  # rank 1 registered nothing
    ranks = [json.loads((run_dir / "ranks" / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert {r["world_size"] for r in ranks} == {2}
    assert {r["global_step"] for r in ranks} == {STEPS}
    assert ranks[0]["trainable_sha256"] == ranks[1]["trainable_sha256"]
    assert ranks[0]["trainable_tensors"] > 0
    for r in ranks:  # each worker ran the CLI entry: guard on, loopback rendezvous, tenant scratch
        assert r["offline_guard"] is True
        assert r["master_addr"] == "127.0.0.1"
        assert r["scratch_in_tenant_tmp"] is True
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["metrics"]["distributed"] == {"world_size": 2, "sharded": False, "in_sync": True}
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run_dir / "inputs.json").read_text())["world_size"] == 2
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, STEPS + 1))  # one writer: no duplicate rows from rank 1
    assert list((project / "studio-workspace" / "tenants" / "default" / "tmp").iterdir()) == []


def test_launcher_killed_then_resumed_with_the_same_processes(project: Path, two_proc_run: Path) -> None:
    before = set(_runs(project).iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "engine", "train", "configs/mp.yaml", "--nproc", "2"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        new = [p for p in _runs(project).iterdir() if p not in before]
        if new and (new[0] / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the launcher; its workers must not outlive it
    proc.communicate()
    run_dir = new[0]
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(project / "studio-workspace")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(project / "studio-workspace")) == []

    res = studio("train", "configs/mp.yaml", "--resume", run_dir.name, cwd=project)  # 2 processes, recorded
    assert res.returncode == 0, res.stderr
    assert _registry_rows(project)[run_dir.name]["status"] == "succeeded"
    assert (run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (two_proc_run / "adapter" / "adapter_model.safetensors").read_bytes()

    again = studio("train", "configs/mp.yaml", "--resume", run_dir.name, cwd=project)
    assert again.returncode == 2 and "already succeeded" in again.stderr


def test_ctrl_c_stops_every_process(project: Path) -> None:
    before = set(_runs(project).iterdir())
    tmp = project / "studio-workspace" / "tenants" / "default" / "tmp"
    scratch_before = set(tmp.iterdir())  # a SIGKILLed process cannot remove its scratch dir
    proc = subprocess.Popen([sys.executable, "-m", "engine", "train", "configs/long.yaml", "--nproc", "2"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    deadline = time.monotonic() + 300
    while not [p for p in _runs(project).iterdir() if p not in before and (p / "metrics.jsonl").exists()]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave a long run behind
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (run_dir,) = [p for p in _runs(project).iterdir() if p not in before]
    assert _registry_rows(project)[run_dir.name]["status"] == "interrupted"
    assert _processes_mentioning(str(project / "studio-workspace")) == []
    assert set(tmp.iterdir()) == scratch_before  # launcher and workers removed theirs


# ------------------------------------------------------------------------------------ fast checks
def test_a_worker_needs_the_shared_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.train import ranks

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv(ranks.RUN_ID_ENV, raising=False)
    with pytest.raises(StudioError, match="STUDIO_RUN_ID"):
        ranks.worker_run_id()
    monkeypatch.setenv(ranks.RUN_ID_ENV, "../escape")
    with pytest.raises(StudioError, match="invalid run name"):
        ranks.worker_run_id()
    monkeypatch.setenv(ranks.RUN_ID_ENV, "run-20260101-000000-node")
    assert ranks.worker_run_id() == "run-20260101-000000-node"


def test_a_user_launched_worker_does_not_reuse_a_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.config import load_config
    from engine.registry import Registry
    from engine.train.launch import train_run
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws").ensure()
    registry = Registry(ws.registry_path)
    registry.put_run("run-taken", "default", "sft", "m", "d@v1", ws.run_dir("default", "run-taken"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("STUDIO_RUN_ID", "run-taken")
    cfg = load_config(ROOT / "configs" / "sft_lora.yaml")
    with pytest.raises(StudioError, match="already exists"):
        train_run(cfg, ws, registry)
    with pytest.raises(StudioError, match="launching command"):
        train_run(cfg, ws, registry, nproc=2)


def test_launch_uses_loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.train import distributed

    args = distributed.torchrun_args(2, 29999, tmp_path / "ws", tmp_path / "c.yaml")
    assert args[args.index("--rdzv-backend") + 1] == "static"
    assert args[args.index("--master-addr") + 1] == "127.0.0.1"
    assert args[args.index("-m") + 1:] == ["engine", "--workspace", str(tmp_path / "ws"), "train",
                                           str((tmp_path / "c.yaml").resolve())]
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.delenv(distributed.RUN_ID_ENV, raising=False)
    with distributed._worker_env("run-x", 2):
        assert os.environ[distributed.RUN_ID_ENV] == "run-x"
        assert os.environ["MASTER_ADDR"] == "127.0.0.1"
        assert os.environ[distributed.LAUNCHER_ENV] == str(os.getpid())
        if Path("/sys/class/net/lo").exists():
            assert os.environ["GLOO_SOCKET_IFNAME"] == "lo"
    assert distributed.RUN_ID_ENV not in os.environ and "GLOO_SOCKET_IFNAME" not in os.environ
    assert 0 < distributed.free_port() < 65536


def test_trainable_hash_covers_only_trainable_parameters() -> None:
    import torch

    from engine.train.ranks import trainable_sha256

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    a[0].weight.requires_grad_(False)
    digest, n = trainable_sha256(a)
    assert n == 3
    with torch.no_grad():
        a[0].weight.add_(1.0)  # frozen: same hash
    assert trainable_sha256(a)[0] == digest
    with torch.no_grad():
        a[1].bias[0] += 1e-6
    assert trainable_sha256(a)[0] != digest


@pytest.mark.parametrize("preset", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_presets_are_valid_launch_configs(preset: str) -> None:
    """Each preset loads with accelerate's own reader, every key is a launch option, and it sets the backend."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = ROOT / "configs" / "accelerate" / f"{preset}.yaml"
    cfg = load_config_from_file(str(path))
    parser = launch_command_parser()
    options = {a.dest for a in parser._actions}
    for key in cfg.fsdp_config:
        assert (key if key.startswith("fsdp_") else f"fsdp_{key}") in options, key
    for key in cfg.deepspeed_config:
        assert key in options, key
    args = parser.parse_args(["--config_file", str(path), "--num_processes", "2", "-m", "engine", "train", "x.yaml"])
    args, _, _ = _validate_launch_command(args)
    expected = {"ddp": "multi_gpu", "fsdp": "use_fsdp"}.get(preset, "use_deepspeed")
    assert getattr(args, expected) is True
    assert cfg.mixed_precision == "no"  # the engine decides bf16 itself
    assert cfg.main_process_ip == "127.0.0.1"
