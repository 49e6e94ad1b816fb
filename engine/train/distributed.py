"""Multi-process training: the `--nproc N` launcher (torchrun, loopback only).

`studio train CONFIG --nproc N` runs torch's elastic launcher inside the CLI process: N workers
`python -m engine --workspace WS train CONFIG` on this machine, rendezvous over a TCP store on
127.0.0.1 (static backend; gloo/NCCL told to use the loopback interface). Each worker runs the CLI
entry, so `engine.offline.enforce()` and its own tenant scratch directory are in place in every
process. Workers learn the run id from `STUDIO_RUN_ID`; rank 0 registers the run, writes
metrics.jsonl, the adapter and the manifest; every rank writes ranks/rank<k>.json (a sha256 of its
trainable parameters) and rank 0 checks they agree (engine/train/ranks.py). Ctrl-C reaches the launcher, which forwards
SIGINT to the workers (they run in their own sessions), so all of them stop.

User-driven launches (`accelerate launch --config_file configs/accelerate/….yaml -m engine …`,
multi-node torchrun) work the same way once every process has the same `STUDIO_RUN_ID`
(docs/training.md).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import StudioError
from engine.train.preview import preview
from engine.train.ranks import LAUNCHER_ENV, RUN_ID_ENV
from engine.registry import Registry
from engine.workspace import Workspace

if TYPE_CHECKING:
    from engine.config import StudioConfig

LOOPBACK = "127.0.0.1"


# -------------------------------------------------------------------------------------- launcher
@dataclass
class LaunchResult:
    run_id: str
    path: Path
    adapter_dir: Path
    metrics: dict[str, Any]


def launch(cfg: StudioConfig, ws: Workspace, registry: Registry, *, run_id: str, nproc: int,
           force: bool = False) -> LaunchResult:
    """Run `nproc` training workers for one run on this machine and wait for them."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if cfg.path is None:
        raise StudioError("--nproc needs the config as a file", hint="studio train CONFIG.yaml --nproc N")
    _check_before_launch(cfg, registry)
    args = parse_args(torchrun_args(nproc, free_port(), ws.root, Path(cfg.path), force))
    try:
        with _worker_env(run_id, nproc), _quiet_elastic_logs():
            run(args)
    except SignalException:
        _settle(registry, run_id, "interrupted")
        raise KeyboardInterrupt from None
    except ChildFailedError as exc:
        codes = {r: f.exitcode for r, f in exc.failures.items()}
        if any(c in (130, -2) for c in codes.values()):  # Ctrl-C / SIGINT in a worker
            _settle(registry, run_id, "interrupted")
            raise KeyboardInterrupt from None
        _settle(registry, run_id, "failed")
        first = min(codes)
        registered = registry.get_run(run_id) is not None
        error = StudioError(f"training process rank {first} exited with code {codes[first]}"
                            " (its message is above)",
                            hint=f"see `studio runs show {run_id}`" if registered else None)
        error.exit_code = codes[first] if codes[first] in (1, 2, 3) else 1
        raise error from None
    row = registry.get_run(run_id)
    if row is None or row["status"] != "succeeded":
        raise StudioError(f"training processes ended but run {run_id!r} did not succeed")
    path = Path(row["path"])
    out = path / "adapter" if (path / "adapter").is_dir() else path / "model"
    return LaunchResult(run_id, path, out, row["metrics"] or {})


def torchrun_args(nproc: int, port: int, workspace: Path, config: Path,
                  force: bool = False) -> list[str]:
    """torchrun's command line: one node, static rendezvous on 127.0.0.1, no restarts."""
    return ["--nnodes", "1", "--nproc-per-node", str(nproc), "--node-rank", "0",
            "--rdzv-backend", "static", "--master-addr", LOOPBACK, "--master-port", str(port),
            "--max-restarts", "0", "--monitor-interval", "0.5",
            "-m", "engine", "--workspace", str(workspace), "train", str(config.resolve()),
            *(["--force"] if force else [])]


def _check_before_launch(cfg: StudioConfig, registry: Registry) -> None:
    """What `--dry-run` checks (base model, data, template and loss mask), once, before N processes."""
    report = preview(cfg, registry)
    if report.get("gate", "passed") != "passed":
        raise StudioError(f"template/mask gate {report['gate']}", where=str(cfg.path),
                          hint="see `studio train CONFIG --dry-run`")


def _settle(registry: Registry, run_id: str, status: str) -> None:
    """Workers killed before rank 0 could record the outcome leave the run 'running': fix that."""
    row = registry.get_run(run_id)
    if row is not None and row["status"] == "running":
        registry.finish_run(run_id, status, {"error": "worker exited"})


def free_port() -> int:
    """A free TCP port on the loopback interface (for the rendezvous store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextmanager
def _worker_env(run_id: str, nproc: int) -> Iterator[None]:
    """Variables the workers inherit: run id, threads per process, loopback-only collectives."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    env = {RUN_ID_ENV: run_id, LAUNCHER_ENV: str(os.getpid()), "OMP_NUM_THREADS": threads,
           "MASTER_ADDR": LOOPBACK}
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
        env.setdefault("NCCL_SOCKET_IFNAME", os.environ.get("NCCL_SOCKET_IFNAME", "lo"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _quiet_elastic_logs() -> Iterator[None]:
    """The launcher's own INFO/WARNING chatter (closing signals, rendezvous) is not the user's."""
    import logging

    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("torch.distributed.elastic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)  # failures are reported by launch() itself
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
