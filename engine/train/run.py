"""The run directory every recipe trains into: run ids, registration, manifest, the shared result.

`tracked_run` wraps a recipe's training code: it creates and registers runs/<id>/ (config.yaml,
inputs.json), holds the run lock, and on success writes manifest.json (engine/manifest.py) and
marks the run succeeded; on an exception it marks it failed or interrupted. `base_model_row`
resolves the model a run starts from (the base, or a parent run's merged weights) and
`TrainResult` is what every recipe returns.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from engine.config import StudioConfig
from engine.errors import StudioError
from engine.hashing import file_manifest, sha256_json
from engine.manifest import environment_section, run_sections
from engine.models.export import parent_weights
from engine.registry import Registry
from engine.train import resume
from engine.train.ranks import is_main_process, world_size
from engine.workspace import Workspace


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass
class TrainResult:
    run_id: str
    path: Path
    adapter_dir: Path
    metrics: dict[str, Any]


def base_model_row(cfg: StudioConfig, registry: Registry) -> dict[str, Any]:
    """The base model's registry row; with train.parent_run, the parent run's merged weights
    (path and hash) in its place, so every recipe starts from where the parent ended."""
    name = (cfg.train.base_model if cfg.train else None) or (cfg.model.name if cfg.model else None)
    row = registry.get_model(name or "")
    if row is None:
        raise StudioError(f"unknown base model {name!r}", hint="see `studio models list`")
    parent = cfg.train.parent_run if cfg.train else None
    if parent:
        path, digest = parent_weights(registry, parent, cfg.tenant, row["name"])
        row = {**row, "path": str(path), "manifest_sha256": digest, "parent_run": parent}
    return row


@dataclass
class RunHandle:
    """A registered run in progress: recipes fill `metrics` and write into `adapter_dir`."""

    run_id: str
    path: Path
    metrics: dict[str, Any]
    resume_from: str | None = None  # checkpoint for trainer.train(resume_from_checkpoint=…), see resume.py

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"


@contextmanager
def tracked_run(cfg: StudioConfig, ws: Workspace, registry: Registry, *, base_model: dict[str, Any],
                data_info: dict[str, Any], run_id: str | None = None) -> Iterator[RunHandle]:
    """Create, register and finish a run directory around a recipe's training code.

    On success: manifest.json (config, data and base-model hashes, output hashes, metrics,
    environment) and status 'succeeded'. On an exception: status 'failed' or 'interrupted'
    (Ctrl-C), no manifest, and the exception propagates. A run dir with a resume marker
    (`studio train --resume`) is continued instead of created (engine/train/resume.py). With
    several processes only rank 0 touches the registry, the run dir files and the manifest.
    """
    spec = cfg.train
    run_id = run_id or new_run_id()
    run_dir = ws.run_dir(cfg.tenant, run_id)
    main = is_main_process()
    resolved = cfg.model_dump(mode="json")
    checkpoint = resume.pending_checkpoint(run_dir)
    handle = RunHandle(run_id, run_dir, {}, resume_from=str(checkpoint) if checkpoint else None)
    if checkpoint is not None:
        resume.check_inputs(run_dir, data_info, base_model)
    elif main:
        run_dir.mkdir(parents=True, mode=0o700, exist_ok=world_size() > 1)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
        resume.record_inputs(run_dir, data_info, base_model, world_size())
        registry.put_run(run_id, cfg.tenant, spec.method, base_model["name"], data_info["ref"], run_dir,
                         parent_run=base_model.get("parent_run"))
    with resume.run_lock(run_dir) if main else nullcontext():  # dies with the process (SIGKILL too)
        if checkpoint is not None and main:
            handle.metrics["resumed_from_step"] = resume.reopen(registry, run_id, run_dir, checkpoint)
        try:
            yield handle
            if main:  # the manifest and the final status: a signal here is an interruption too
                _finish(cfg, registry, handle, run_id, run_dir, resolved, data_info, base_model)
        except BaseException as exc:
            if main:
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                (run_dir / "manifest.json").unlink(missing_ok=True)  # only a finished run has one
                registry.finish_run(run_id, status, {"error": exc.__class__.__name__})
            raise


def _finish(cfg: StudioConfig, registry: Registry, handle: RunHandle, run_id: str, run_dir: Path,
            resolved: dict[str, Any], data_info: dict[str, Any], base_model: dict[str, Any]) -> None:
    """Write the run's manifest, clear its resume marker and mark it succeeded (rank 0)."""
    spec = cfg.train
    outputs = handle.adapter_dir if handle.adapter_dir.is_dir() else run_dir / "model"
    manifest = {
        "run_id": run_id, "tenant": cfg.tenant, "method": spec.method, "adapter": spec.adapter,
        "config": resolved, "config_sha256": sha256_json(resolved), "seed": cfg.seed,
        "dataset": {k: v for k, v in data_info.items() if k != "dataset"},
        "base_model": {"name": base_model["name"], "manifest_sha256": base_model["manifest_sha256"],
                       "source_sha256": base_model["source_sha256"],
                       "parent_run": base_model.get("parent_run")},
        "outputs": {"dir": outputs.name, "files": file_manifest(outputs) if outputs.is_dir() else {}},
        "metrics": handle.metrics,
        **environment_section(),
        **run_sections(cfg, run_dir, outputs, base_model),  # engine/manifest.py
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True),
                                           encoding="utf-8")
    registry.finish_run(run_id, "succeeded", handle.metrics)
    resume.clear_marker(run_dir)
