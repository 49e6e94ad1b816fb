"""Start a training run: pick the recipe for `train.method` and run it in this process."""

from __future__ import annotations

import importlib
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
              progress: Progress | None = None, run_id: str | None = None) -> Any:
    assert cfg.train is not None
    module, func = RECIPES[cfg.train.method]
    try:
        recipe = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        raise StudioError(f"training method {cfg.train.method!r} is not available in this build",
                          hint="available: " + ", ".join(m for m in RECIPES if _has(m))) from None
    return recipe(cfg, ws, registry, progress=progress, run_id=run_id)


def _has(method: str) -> bool:
    module, func = RECIPES[method]
    try:
        return hasattr(importlib.import_module(module), func)
    except ImportError:
        return False
