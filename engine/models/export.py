"""Exporting a run's weights: its adapter, or base + adapter merged into one safetensors model.

`studio export RUN`, and the merged start weights of a run trained on top of a parent run
(`parent_weights`, used by the trainer and by model resolution).

Exports stay inside the tenant's run directory (runs/<id>/export/{adapter,merged}/): a tuned
model carries the tenant's data and never goes into the shared model store. Each export has a
manifest with the sha256 of every file, its dtype and its lineage (base model, dataset version, run).

A merged model is written in the base model's dtype (a bfloat16 base gives a bfloat16 export, half
the size of float32); `dtype` forces float32, bfloat16 or float16, written to export/merged-<dtype>/
when it differs from the base's, so export/merged/ (also the start weights of child runs) is always
the base's dtype. The merge itself runs in float32 (base weights upcast exactly, W + scale·B·A) and
the result is cast once at the end: the small update is added at full precision and rounded once.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors import safe_open

from engine.errors import StudioError
from engine.hashing import file_manifest, sha256_json
from engine.models.loading import load_causal_lm, load_tokenizer, torch_dtype
from engine.registry import Registry, now_iso
from engine.workspace import Workspace


# What `dtype` may be: auto (the base model's) or one of these.
EXPORT_DTYPES = ("auto", "float32", "bfloat16", "float16")
# safetensors header dtype -> torch dtype name, for the floating-point ones
_SAFETENSORS_FLOATS = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def stored_dtype(model_dir: str | Path) -> str:
    """The floating-point dtype a model's weights are stored in: the dtype of most elements in its
    safetensors files (read from their headers), else config.json's `dtype`/`torch_dtype`, else float32."""
    counts: dict[str, int] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:  # the header only; no tensor is read
            for key in f.keys():
                tensor = f.get_slice(key)
                name = _SAFETENSORS_FLOATS.get(tensor.get_dtype())
                if name:
                    counts[name] = counts.get(name, 0) + math.prod(tensor.get_shape() or [1])
    if counts:
        return max(sorted(counts), key=lambda name: counts[name])
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    declared = (config.get("dtype") or config.get("torch_dtype")) if isinstance(config, dict) else None
    return declared if declared in _SAFETENSORS_FLOATS.values() else "float32"


def export_run(ws: Workspace | None, registry: Registry, run_id: str, tenant: str, *,
               merge: bool, dtype: str = "auto") -> Path:
    run = registry.get_run(run_id)
    if run is None or run["tenant"] != tenant:
        raise StudioError(f"unknown run {run_id!r} for tenant {tenant!r}", hint="see `studio runs list`")
    if run["status"] != "succeeded":
        raise StudioError(f"run {run_id!r} has status {run['status']!r}; only finished runs export")
    run_dir = Path(run["path"])
    adapter = run_dir / "adapter"
    base = registry.get_model(run["base_model"])
    if base is None:
        raise StudioError(f"base model {run['base_model']!r} of run {run_id!r} is not in the store")
    if dtype not in EXPORT_DTYPES:
        raise StudioError(f"unknown export dtype {dtype!r}", hint=f"one of {', '.join(EXPORT_DTYPES)}")
    if dtype != "auto" and not merge:
        raise StudioError("--dtype applies to merged exports; an adapter is copied as it was trained",
                          hint="add --merge")
    kind = "merged" if merge else "adapter"
    base_dtype = stored_dtype(base["path"])
    out_dtype = base_dtype if dtype == "auto" else dtype
    target = run_dir / "export" / (kind if out_dtype == base_dtype or not merge else f"{kind}-{out_dtype}")
    if not adapter.is_dir():
        if (run_dir / "model").is_dir():
            raise StudioError(f"run {run_id!r} trained all weights: runs/{run_id}/model is already a "
                              "complete model", hint="use that directory directly")
        raise StudioError(f"run {run_id!r} has no adapter directory")
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o700)
    try:
        if merge:
            start = base["path"]
            if run.get("parent_run"):  # the adapter was trained on the parent run's weights
                start, _ = parent_weights(registry, run["parent_run"], tenant, run["base_model"])
            # merged in float32 (weights upcast exactly), then rounded once to the export's dtype
            model = load_causal_lm(start, adapter, dtype="float32", merge=True)
            model = model.to(torch_dtype(out_dtype))
            model.save_pretrained(tmp, safe_serialization=True)
            load_tokenizer(adapter).save_pretrained(tmp)
        else:
            shutil.copytree(adapter, tmp, dirs_exist_ok=True)
        files = file_manifest(tmp)
        manifest: dict[str, Any] = {
            "kind": kind, "run_id": run_id, "created_at": now_iso(), "files": files,
            "files_sha256": sha256_json(files),
            **({"dtype": out_dtype, "merge_dtype": "float32"} if merge else {}),
            "lineage": {"base_model": base["name"], "base_manifest_sha256": base["manifest_sha256"],
                        "base_dtype": base_dtype,
                        "dataset": run["dataset"], "run": run_id, "method": run["method"],
                        "parent_run": run.get("parent_run")},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def parent_weights(registry: Registry, run_id: str, tenant: str, base_model: str) -> tuple[Path, str]:
    """(model directory, content hash) of a finished run's weights, to train on top of them.

    An adapter run is merged into its base once (runs/<id>/export/merged/, reused afterwards);
    a full fine-tuning run's model/ is used as it is.
    """
    run = registry.get_run(run_id)
    if run is None or run["tenant"] != tenant:
        raise StudioError(f"unknown parent run {run_id!r} for tenant {tenant!r}",
                          where="train.parent_run", hint="see `studio runs list`")
    if run["status"] != "succeeded":
        raise StudioError(f"parent run {run_id!r} has status {run['status']!r}, not 'succeeded'",
                          where="train.parent_run")
    if run["base_model"] != base_model:
        raise StudioError(f"parent run {run_id!r} was trained on {run['base_model']!r}, not {base_model!r}",
                          where="train.parent_run", hint="set train.base_model to the parent's base model")
    run_dir = Path(run["path"])
    if (run_dir / "model").is_dir():
        return run_dir / "model", sha256_json(file_manifest(run_dir / "model"))
    merged = run_dir / "export" / "merged"
    if not (merged / "manifest.json").is_file():
        merged = export_run(None, registry, run_id, tenant, merge=True)
    manifest = json.loads((merged / "manifest.json").read_text(encoding="utf-8"))
    return merged, manifest["files_sha256"]
