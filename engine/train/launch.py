"""Start a training run: resume checks, one process or `--nproc N` workers, the recipe for `train.method`."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from rich.progress import Progress

from engine.config import StudioConfig
from engine.errors import StudioError
from engine.registry import Registry
from engine.workspace import Workspace

# method -> (module, function); each recipe is a self-contained file on TRL.
RECIPES: dict[str, tuple[str, str]] = {
    "sft": ("engine.train.sft", "train_sft"),
    "dpo": ("engine.train.preference", "train_preference"),
    "kto": ("engine.train.preference", "train_preference"),
    "orpo": ("engine.train.preference", "train_preference"),
    "cpo": ("engine.train.preference", "train_preference"),
    "simpo": ("engine.train.preference", "train_preference"),
    "reward": ("engine.train.reward", "train_reward"),
    "grpo": ("engine.train.grpo", "train_grpo"),
}


def train_run(cfg: StudioConfig, ws: Workspace, registry: Registry, *,
              progress: Progress | None = None, run_id: str | None = None,
              resume: str | None = None, nproc: int | None = None, force: bool = False) -> Any:
    """Train (or with `resume`, continue) one run; returns the recipe's result, None in a worker.

    In a process started by a distributed launcher (ours or the user's) this runs the recipe as
    one rank of the run named by STUDIO_RUN_ID (or `resume`). Otherwise `resume` is checked and marked here,
    and `nproc` > 1 starts that many workers on this machine (engine/train/distributed.py).
    """
    from engine.train import distributed

    assert cfg.train is not None
    recipe = _recipe_for(cfg, registry)
    extra = {"force": force} if "force" in inspect.signature(recipe).parameters else {}
    if distributed.is_worker():
        if (nproc or 1) > 1:
            raise StudioError("--nproc is for the launching command, not for its workers",
                              hint="under torchrun/accelerate launch the launcher sets the process count")
        distributed.die_with_launcher()
        main = distributed.is_main_process()
        run_id = distributed.worker_run_id(resume)
        if resume:  # a user-launched resume: every rank checks, the marker write is atomic
            from engine.train.resume import mark_for_resume, plan_resume

            mark_for_resume(plan_resume(cfg, registry, resume, distributed.world_size(), check_lock=main))
        elif main:
            _refuse_reused_run_id(ws, registry, cfg.tenant, run_id)
        result = recipe(cfg, ws, registry, progress=progress if main else None, run_id=run_id, **extra)
        # under `--nproc` the launching command reports; under a user's launcher rank 0 does
        return result if main and not distributed.launched_by_studio() else None
    if nproc is not None and nproc < 1:
        raise StudioError(f"--nproc must be at least 1, got {nproc}")
    if resume:
        from engine.train.resume import mark_for_resume, plan_resume

        plan = plan_resume(cfg, registry, resume, nproc)
        mark_for_resume(plan)
        run_id, nproc = plan.run_id, plan.world_size
    if (nproc or 1) > 1:
        from engine.train.common import new_run_id

        return distributed.launch(cfg, ws, registry, run_id=run_id or new_run_id(),
                                  nproc=int(nproc or 1), force=force)
    return recipe(cfg, ws, registry, progress=progress, run_id=run_id, **extra)


def _refuse_reused_run_id(ws: Workspace, registry: Registry, tenant: str, run_id: str) -> None:
    """A user-chosen STUDIO_RUN_ID that names an existing run is a new run only by mistake."""
    from engine.train.resume import MARKER

    if registry.get_run(run_id) is not None and not (ws.run_dir(tenant, run_id) / MARKER).is_file():
        raise StudioError(f"run {run_id!r} already exists",
                          hint="export a new STUDIO_RUN_ID, or add `--resume RUN_ID` to continue it")


def _recipe_for(cfg: StudioConfig, registry: Registry) -> Any:
    """The vision recipe for a vision-language base model, else the method's recipe."""
    name = cfg.train.base_model or (cfg.model.name if cfg.model else None)
    row = registry.get_model(name or "")
    if row is not None:
        from engine.train.vlm import is_vlm_model

        if is_vlm_model(row["path"]):
            from engine.train.vlm import train_vlm

            return train_vlm
    return _recipe(cfg.train.method)


def _recipe(method: str) -> Any:
    module, func = RECIPES[method]
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        raise StudioError(f"training method {method!r} is not available in this build",
                          hint="available: " + ", ".join(m for m in RECIPES if _has(m))) from None


def _has(method: str) -> bool:
    module, func = RECIPES[method]
    try:
        return hasattr(importlib.import_module(module), func)
    except ImportError:
        return False
