"""This process's place in a multi-process run: rank helpers, the shared run id, per-rank weight hashes.

Set by the launcher (ours: engine/train/distributed.py, or torchrun / accelerate launch): RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, and STUDIO_RUN_ID for the run every worker shares. Every rank
writes ranks/rank<k>.json (a sha256 of its trainable parameters); rank 0 checks they agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from engine import offline
from engine.errors import StudioError
from engine.workspace import check_name

RUN_ID_ENV = "STUDIO_RUN_ID"
LAUNCHER_ENV = "STUDIO_LAUNCHER_PID"  # set for workers started by `studio train --nproc`


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
    run_id = os.environ.get(RUN_ID_ENV, "")
    if resume and run_id and run_id != resume:
        raise StudioError(f"{RUN_ID_ENV}={run_id} but --resume {resume}", hint="use the same run id")
    run_id = resume or run_id
    if not run_id:
        raise StudioError(f"launched as {world_size()} processes without {RUN_ID_ENV}",
                          hint=f"use `studio train CONFIG --nproc N`, or export the same {RUN_ID_ENV} "
                               "(e.g. run-YYYYMMDD-HHMMSS-name) to every process (docs/training.md)")
    return check_name(run_id, "run")


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
