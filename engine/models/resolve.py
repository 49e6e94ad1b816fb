"""Model references: a model store name, or a run id (its adapter on its base), to weights and hashes.

`resolve_model` is how eval, the model judges and the refine's LLM stages name a model: it checks
the tenant, the run's status and the base model, and returns the directories to load plus the
content hashes that decide the outputs (the generation cache's model key and the proof record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import StudioError
from engine.hashing import file_manifest, sha256_file, sha256_json
from engine.models.export import parent_weights
from engine.registry import Registry


@dataclass
class ModelRef:
    label: str
    model_dir: Path
    adapter_dir: Path | None
    identity: dict[str, Any]
    # content hashes that decide the outputs (the generation cache's model key, the proof record)
    weights: dict[str, Any] = field(default_factory=dict)


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def adapter_sha256(adapter_dir: Path) -> str:
    """Hash of the adapter's config and weights as they are on disk now."""
    return sha256_json({name: sha256_file(adapter_dir / name) for name in ADAPTER_FILES
                        if (adapter_dir / name).is_file()})


def resolve_model(registry: Registry, ref: str, tenant: str) -> ModelRef:
    """A run id (its adapter on its base model) or a model store name."""
    run = registry.get_run(ref)
    if run is not None:
        if run["tenant"] != tenant:
            raise StudioError(f"run {ref!r} belongs to another tenant")
        if run["status"] != "succeeded":
            raise StudioError(f"run {ref!r} has status {run['status']!r}, not 'succeeded'",
                              hint="evaluate a finished run (see `studio runs list`)")
        base = registry.get_model(run["base_model"])
        if base is None:
            raise StudioError(f"base model {run['base_model']!r} of run {ref!r} is not in the store")
        adapter = Path(run["path"]) / "adapter"
        start = Path(base["path"])
        weights: dict[str, Any] = {"base": base["manifest_sha256"]}
        if run.get("parent_run"):  # trained on top of another run: start from its weights
            start, weights["start"] = parent_weights(registry, run["parent_run"], tenant,
                                                     run["base_model"])
        if not adapter.is_dir() and (Path(run["path"]) / "model").is_dir():  # full fine-tuning
            model_dir = Path(run["path"]) / "model"
            # the hash recorded at the end of training (hashing gigabytes per eval is slow);
            # sharded checkpoints have none recorded: hash the files
            recorded = (run.get("metrics") or {}).get("model_sha256")
            return ModelRef(ref, model_dir, None,
                            {"base": base["manifest_sha256"], "run": ref},
                            {"base": base["manifest_sha256"],
                             "model": recorded or sha256_json(file_manifest(model_dir))})
        weights["adapter"] = adapter_sha256(adapter)
        return ModelRef(ref, start, adapter,
                        {"base": base["manifest_sha256"], "run": ref,
                         "adapter_sha256": (run.get("metrics") or {}).get("adapter_sha256")},
                        weights)
    model = registry.get_model(ref)
    if model is None:
        raise StudioError(f"unknown model or run {ref!r}",
                          hint="use a name from `studio models list` or a run id from `studio runs list`")
    return ModelRef(ref, Path(model["path"]), None, {"base": model["manifest_sha256"]},
                    {"base": model["manifest_sha256"]})
