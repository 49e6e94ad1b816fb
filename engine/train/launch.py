"""Start a training run: resume checks, one process or `--nproc N` workers, the recipe for `train.method`."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from rich.progress import Progress

from engine.config import StudioConfig
from engine.errors import StudioError
from engine.models.loading import is_vlm_model
from engine.registry import Registry
from engine.train import distributed, ranks
from engine.train.resume import MARKER, mark_for_resume, plan_resume
from engine.train.run import new_run_id
from engine.workspace import Workspace

# method -> (module, function); each recipe is a self-contained file on TRL, imported only when it
# runs (TRL and transformers take seconds to import).
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
VISION_RECIPE = ("engine.train.vlm", "train_vlm")  # any method on a vision-language base model


def train_run(cfg: StudioConfig, ws: Workspace, registry: Registry, *,
              progress: Progress | None = None, run_id: str | None = None,
              resume: str | None = None, nproc: int | None = None, force: bool = False) -> Any:
    """Train (or with `resume`, continue) one run; returns the recipe's result, None in a worker.

    In a process started by a distributed launcher (ours or the user's) this runs the recipe as
    one rank of the run named by STUDIO_RUN_ID (or `resume`). Otherwise `resume` is checked and marked here,
    and `nproc` > 1 starts that many workers on this machine (engine/train/distributed.py).
    """
    assert cfg.train is not None
    recipe = _recipe_for(cfg, registry)
    extra = {"force": force} if "force" in inspect.signature(recipe).parameters else {}
    if ranks.is_worker():
        if (nproc or 1) > 1:
            raise StudioError("--nproc is for the launching command, not for its workers",
                              hint="under torchrun/accelerate launch the launcher sets the process count")
        ranks.die_with_launcher()
        main = ranks.is_main_process()
        run_id = ranks.worker_run_id(resume)
        if resume:  # a user-launched resume: every rank checks, the marker write is atomic
            mark_for_resume(plan_resume(cfg, registry, resume, ranks.world_size(), check_lock=main))
        elif main:
            _refuse_reused_run_id(ws, registry, cfg.tenant, run_id)
        result = recipe(cfg, ws, registry, progress=progress if main else None, run_id=run_id, **extra)
        # under `--nproc` the launching command reports; under a user's launcher rank 0 does
        return result if main and not ranks.launched_by_studio() else None
    if nproc is not None and nproc < 1:
        raise StudioError(f"--nproc must be at least 1, got {nproc}")
    if resume:
        plan = plan_resume(cfg, registry, resume, nproc)
        mark_for_resume(plan)
        run_id, nproc = plan.run_id, plan.world_size
    if (nproc or 1) > 1:
        return distributed.launch(cfg, ws, registry, run_id=run_id or new_run_id(),
                                  nproc=int(nproc or 1), force=force)
    return recipe(cfg, ws, registry, progress=progress, run_id=run_id, **extra)


def _refuse_reused_run_id(ws: Workspace, registry: Registry, tenant: str, run_id: str) -> None:
    """A user-chosen STUDIO_RUN_ID that names an existing run is a new run only by mistake."""
    if registry.get_run(run_id) is not None and not (ws.run_dir(tenant, run_id) / MARKER).is_file():
        raise StudioError(f"run {run_id!r} already exists",
                          hint="export a new STUDIO_RUN_ID, or add `--resume RUN_ID` to continue it")


def _recipe_for(cfg: StudioConfig, registry: Registry) -> Any:
    """The vision recipe for a vision-language base model, else the method's recipe."""
    name = cfg.train.base_model or (cfg.model.name if cfg.model else None)
    row = registry.get_model(name or "")
    if row is not None and is_vlm_model(row["path"]):
        module, func = VISION_RECIPE
        return getattr(importlib.import_module(module), func)
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
