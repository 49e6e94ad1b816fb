"""Multi-process training: the `--nproc N` launcher (torchrun, loopback only), ranks, per-rank weight hashes.

`studio train CONFIG --nproc N` runs torch's elastic launcher inside the CLI process: N workers
`python -m engine --workspace WS train CONFIG` on this machine, rendezvous over a TCP store on
127.0.0.1 (static backend; gloo/NCCL told to use the loopback interface). Each worker runs the CLI
entry, so `engine.offline.enforce()` and its own tenant scratch directory are in place in every
process. Workers learn the run id from `STUDIO_RUN_ID`; rank 0 registers the run, writes
metrics.jsonl, the adapter and the manifest; every rank writes ranks/rank<k>.json (a sha256 of its
trainable parameters) and rank 0 checks they agree. Ctrl-C reaches the launcher, which forwards
SIGINT to the workers (they run in their own sessions), so all of them stop.

User-driven launches (`accelerate launch --config_file configs/accelerate/….yaml -m engine …`,
multi-node torchrun) work the same way once every process has the same `STUDIO_RUN_ID`
(docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import StudioError

RUN_ID_ENV = "STUDIO_RUN_ID"
LAUNCHER_ENV = "STUDIO_LAUNCHER_PID"  # set for workers started by `studio train --nproc`
LOOPBACK = "127.0.0.1"


# ----------------------------------------------------------------------------------------- ranks
def rank() -> int:
    """Global rank of this process (0 when not launched as one of several processes)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def is_worker() -> bool:
    """True inside a process started by a distributed launcher (torchrun, accelerate launch)."""
    return world_size() > 1


def launched_by_studio() -> bool:
    return os.environ.get(LAUNCHER_ENV, "").isdigit()


def die_with_launcher() -> None:
    """Linux: a worker of `studio train --nproc` is killed when its launcher dies, even by SIGKILL.

    (The workers run in their own sessions, so nothing else would stop them.)
    """
    if not (launched_by_studio() and sys.platform.startswith("linux")):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return
    if os.getppid() != int(os.environ[LAUNCHER_ENV]):  # the launcher was already gone
        os._exit(1)


def worker_run_id(resume: str | None = None) -> str:
    """The run id every worker shares (STUDIO_RUN_ID, or the run being resumed)."""
    from engine.workspace import check_name

    run_id = os.environ.get(RUN_ID_ENV, "")
    if resume and run_id and run_id != resume:
        raise StudioError(f"{RUN_ID_ENV}={run_id} but --resume {resume}", hint="use the same run id")
    run_id = resume or run_id
    if not run_id:
        raise StudioError(f"launched as {world_size()} processes without {RUN_ID_ENV}",
                          hint=f"use `studio train CONFIG --nproc N`, or export the same {RUN_ID_ENV} "
                               "(e.g. run-YYYYMMDD-HHMMSS-name) to every process (docs/training.md)")
    return check_name(run_id, "run")


# -------------------------------------------------------------------------------------- launcher
@dataclass
class LaunchResult:
    run_id: str
    path: Path
    adapter_dir: Path
    metrics: dict[str, Any]


def launch(cfg: Any, ws: Any, registry: Any, *, run_id: str, nproc: int,
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


def _check_before_launch(cfg: Any, registry: Any) -> None:
    """What `--dry-run` checks (base model, data, template and loss mask), once, before N processes."""
    from engine.train.preview import preview

    report = preview(cfg, registry)
    if report.get("gate", "passed") != "passed":
        raise StudioError(f"template/mask gate {report['gate']}", where=str(cfg.path),
                          hint="see `studio train CONFIG --dry-run`")


def _settle(registry: Any, run_id: str, status: str) -> None:
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


# -------------------------------------------------------------------------------- rank weights
def trainable_sha256(model: Any) -> tuple[str, int]:
    """sha256 over (name, dtype, shape, bytes) of every trainable parameter, in name order."""
    import torch

    h = hashlib.sha256()
    n = 0
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if not p.requires_grad:
            continue
        t = p.to_local() if hasattr(p, "to_local") else p  # FSDP2 DTensor: this rank's shard
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        n += 1
    return h.hexdigest(), n


def record_rank_state(trainer: Any, run_dir: Path) -> dict[str, Any] | None:
    """Every rank writes ranks/rank<k>.json; returns a summary (None in a single process).

    With replicated weights (DDP, ZeRO-1/2) all ranks must hash the same; rank 0 gets
    `in_sync`. Sharded weights (FSDP, ZeRO-3) hash per shard, so no comparison is made.
    """
    n_ranks = world_size()
    if n_ranks <= 1:
        return None
    digest, tensors = trainable_sha256(trainer.model)
    k = rank()
    ranks_dir = run_dir / "ranks"
    ranks_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (ranks_dir / f"rank{k}.json").write_text(json.dumps({
        "rank": k, "world_size": n_ranks, "global_step": trainer.state.global_step,
        "trainable_sha256": digest, "trainable_tensors": tensors, "written_at": time.time(),
        **_process_facts(run_dir),
    }, indent=2), encoding="utf-8")
    sharded = bool(getattr(trainer, "is_fsdp_enabled", False)) or _zero3(trainer)
    summary: dict[str, Any] = {"world_size": n_ranks, "sharded": sharded}
    if not sharded:
        import torch.distributed as dist

        digests: list[Any] = [None] * n_ranks
        if dist.is_available() and dist.is_initialized():
            dist.all_gather_object(digests, digest)
            summary["in_sync"] = len(set(digests)) == 1
    return summary


def _process_facts(run_dir: Path) -> dict[str, Any]:
    """How this rank ran: offline guard on, rendezvous address, scratch inside the tenant's tmp/."""
    from engine import offline

    tenant_tmp = run_dir.parent.parent / "tmp"
    scratch = Path(os.environ.get("TMPDIR", "/"))
    return {"offline_guard": offline.guard_installed() and os.environ.get("HF_HUB_OFFLINE") == "1",
            "master_addr": os.environ.get("MASTER_ADDR"),
            "scratch_in_tenant_tmp": scratch.resolve().is_relative_to(tenant_tmp.resolve())}


def _zero3(trainer: Any) -> bool:
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return False
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(plugin is not None and getattr(plugin, "zero_stage", 0) == 3)
