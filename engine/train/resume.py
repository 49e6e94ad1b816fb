"""`studio train CONFIG --resume RUN_ID`: checks, the resume marker and reopening of an unfinished run.

A run directory holds what resuming needs: config.yaml (the resolved config it started with),
inputs.json (dataset and base-model hashes, process count) and checkpoints/checkpoint-N written by
the Trainer (weights, optimizer, scheduler, RNG states, trainer_state.json last). Resuming is:

1. `plan_resume` (before any work, in the launching process): the run exists, belongs to the
   tenant, is not succeeded nor held by a live process (`run_lock`), has a complete checkpoint,
   and the config resolves to exactly the saved one (the differing fields are listed).
2. `mark_for_resume` writes runs/<id>/.resume.json naming the checkpoint.
3. `tracked_run` (engine/train/common.py) sees the marker in every process: it checks the inputs
   (`check_inputs`), and rank 0 reopens the run (`reopen`: status back to running, metrics.jsonl cut
   back to the checkpoint, half-written checkpoints removed). The recipe then calls
   `trainer.train(resume_from_checkpoint=run.resume_from)`, which restores weights, optimizer,
   scheduler and RNG states and skips the batches already seen: same data order, same result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engine.errors import StudioError
from engine.registry import Registry

if TYPE_CHECKING:
    from engine.config import StudioConfig

MARKER = ".resume.json"
INPUTS = "inputs.json"
LOCK = ".lock"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_COMPLETE = "trainer_state.json"  # the Trainer writes it last into a checkpoint


@dataclass
class ResumePlan:
    run_id: str
    path: Path
    checkpoint: Path
    step: int
    world_size: int


# ------------------------------------------------------------------------------------- planning
def plan_resume(cfg: StudioConfig, registry: Registry, run_id: str, nproc: int | None, *,
                check_lock: bool = True) -> ResumePlan:
    """Every check that can refuse a resume before anything is loaded; StudioError on a refusal.

    `check_lock=False` for ranks > 0 of a user-launched resume: rank 0 may already hold the lock.
    """
    row = registry.get_run(run_id)
    if row is None or row["tenant"] != cfg.tenant:
        raise StudioError(f"unknown run {run_id!r} for tenant {cfg.tenant!r}",
                          hint="see `studio runs list --tenant TENANT`; a run is resumed with the "
                               "tenant (and config) it started with")
    if row["status"] == "succeeded":
        raise StudioError(f"run {run_id!r} already succeeded; there is nothing to resume",
                          hint="start a new run with `studio train CONFIG`")
    run_dir = Path(row["path"])
    if check_lock and run_is_locked(run_dir):
        raise StudioError(f"run {run_id!r} is still being trained by another process",
                          hint="wait for it to finish, or stop it first (Ctrl-C)")
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise StudioError(f"run {run_id!r} has no saved config.yaml", where=str(run_dir),
                          hint="this run directory is incomplete; start a new run")
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    diffs = config_diff(saved, cfg.model_dump(mode="json"))
    if diffs:
        shown = "\n".join(f"  {d}" for d in diffs[:20])
        if len(diffs) > 20:
            shown += f"\n  … {len(diffs) - 20} more"
        raise StudioError(f"the config differs from the one run {run_id!r} started with:\n{shown}",
                          where=str(cfg.path) if cfg.path else None,
                          hint=f"resume with the run's own config ({saved_path}) or start a new run")
    found = last_checkpoint(run_dir / "checkpoints")
    if found is None:
        raise StudioError(f"run {run_id!r} has no complete checkpoint to resume from",
                          where=str(run_dir / "checkpoints"),
                          hint="set train.save_steps so that runs write checkpoints; start a new run")
    recorded = int(read_inputs(run_dir).get("world_size", 1))
    if nproc is not None and nproc != recorded:
        raise StudioError(f"run {run_id!r} was trained by {recorded} process(es), not {nproc}",
                          hint=f"resume with --nproc {recorded} (or leave --nproc out): the data "
                               "order and RNG states are per process")
    return ResumePlan(run_id, run_dir, found[1], found[0], recorded)


def config_diff(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """'field.path: saved → current' for every leaf that differs between two resolved configs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in list(saved) + [k for k in current if k not in saved]:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in current:
                out.append(f"{path}: {_short(saved[key])} → (missing)")
            elif key not in saved:
                out.append(f"{path}: (missing) → {_short(current[key])}")
            else:
                out.extend(config_diff(saved[key], current[key], path))
        return out
    if saved != current:
        return [f"{prefix or '(config)'}: {_short(saved)} → {_short(current)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "…"


def last_checkpoint(ckpt_dir: Path) -> tuple[int, Path] | None:
    """(step, path) of the newest checkpoint that was written completely, or None."""
    if not ckpt_dir.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in ckpt_dir.iterdir()
                   if (m := _CHECKPOINT_RE.match(p.name)) and (p / _COMPLETE).is_file())
    return found[-1] if found else None


# ----------------------------------------------------------------------------- marker & inputs
def mark_for_resume(plan: ResumePlan) -> None:
    """Tell the training process(es) which checkpoint to continue from (atomic: ranks may race)."""
    tmp = plan.path / f"{MARKER}.{os.getpid()}"
    tmp.write_text(json.dumps({"checkpoint": plan.checkpoint.name, "step": plan.step}), encoding="utf-8")
    os.replace(tmp, plan.path / MARKER)


def pending_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint named by the resume marker of this run directory, if there is one."""
    marker = run_dir / MARKER
    if not marker.is_file():
        return None
    ckpt = run_dir / "checkpoints" / json.loads(marker.read_text(encoding="utf-8"))["checkpoint"]
    if not (ckpt / _COMPLETE).is_file():
        raise StudioError(f"checkpoint {ckpt.name} of the run is gone", where=str(ckpt.parent),
                          hint="run `studio train CONFIG --resume RUN_ID` again")
    return ckpt


def clear_marker(run_dir: Path) -> None:
    (run_dir / MARKER).unlink(missing_ok=True)


def record_inputs(run_dir: Path, data_info: dict[str, Any], base_model: dict[str, Any],
                  world_size: int) -> None:
    """inputs.json: what a resume must find unchanged (hashes only, never data)."""
    inputs = {"dataset": {"ref": data_info.get("ref"), "sha256": data_info.get("sha256")},
              "base_model": {"name": base_model["name"],
                             "manifest_sha256": base_model["manifest_sha256"]},
              "world_size": world_size}
    (run_dir / INPUTS).write_text(json.dumps(inputs, indent=2, sort_keys=True), encoding="utf-8")


def read_inputs(run_dir: Path) -> dict[str, Any]:
    path = run_dir / INPUTS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def check_inputs(run_dir: Path, data_info: dict[str, Any], base_model: dict[str, Any]) -> None:
    """Refuse to resume on a different dataset version/file or a re-imported base model."""
    inputs = read_inputs(run_dir)
    now = {"dataset": {"ref": data_info.get("ref"), "sha256": data_info.get("sha256")},
           "base_model": {"name": base_model["name"], "manifest_sha256": base_model["manifest_sha256"]}}
    diffs = [d for key in ("dataset", "base_model") if key in inputs
             for d in config_diff(inputs[key], now[key], key)]
    if diffs:
        raise StudioError("the run's inputs changed since it started:\n" + "\n".join(f"  {d}" for d in diffs),
                          where=str(run_dir / INPUTS),
                          hint="pin the dataset version (name@vN) the run used, or start a new run")


# ------------------------------------------------------------------------------------ reopening
def reopen(registry: Registry, run_id: str, run_dir: Path, checkpoint: Path) -> int:
    """Rank 0, just before training continues: drop what the dead process wrote after the checkpoint.

    Returns the checkpoint's step. Status goes back to 'running' (a SIGKILLed run never left it).
    """
    step = int(_CHECKPOINT_RE.match(checkpoint.name).group(1))  # type: ignore[union-attr]
    for path in checkpoint.parent.iterdir():  # half-written or newer-than-chosen checkpoints
        m = _CHECKPOINT_RE.match(path.name)
        if m and int(m.group(1)) > step:
            shutil.rmtree(path, ignore_errors=True)
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        kept = [line for line in metrics.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        metrics.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    for leftover in ("manifest.json", "adapter", "model"):
        target = run_dir / leftover
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    # The registry has no "reopen" verb yet; this is the one write it needs.
    with registry._db() as db:
        db.execute("UPDATE runs SET status='running', finished_at=NULL, metrics=NULL WHERE run_id=?",
                   (run_id,))
    return step


# ------------------------------------------------------------------------------------------ lock
@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Held by the process that trains a run; the OS drops it when that process dies (even SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no liveness check
        yield
        return
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StudioError("the run is being trained by another process", where=str(run_dir)) from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def run_is_locked(run_dir: Path) -> bool:
    if not (run_dir / LOCK).exists():
        return False
    try:
        with run_lock(run_dir):
            return False
    except StudioError:
        return True
