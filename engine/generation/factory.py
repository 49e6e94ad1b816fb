"""`make_backend`: the generation backend a config asks for (`eval.backend`: transformers or vllm);
`open_judge`: a judge model (store name or run id) as an in-process backend."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from engine.generation.transformers_backend import TransformersBackend
from engine.generation.vllm_generation import VLLMGenerationBackend
from engine.hashing import sha256_json
from engine.models.resolve import resolve_model
from engine.registry import Registry


def make_backend(spec: Any, model_dir: Path, adapter_dir: Path | None = None) -> Any:
    """The generation backend an eval spec asks for (`eval.backend`): transformers in-process, or
    a vLLM server started on first use (caches under this job's confined temp dir; `close()` it)."""
    if getattr(spec, "backend", "transformers") != "vllm":
        return TransformersBackend(model_dir, adapter_dir)
    v = spec.vllm
    return VLLMGenerationBackend(model_dir, adapter_dir,
                                 cache_dir=Path(tempfile.mkdtemp(prefix="vllm-eval-")),
                                 python=v.python, max_model_len=v.max_model_len, dtype=v.dtype,
                                 gpu_memory_utilization=v.gpu_memory_utilization,
                                 extra_args=list(v.extra_args), startup_timeout=v.startup_timeout_s)


def open_judge(registry: Registry, ref: str, tenant: str) -> tuple[TransformersBackend, dict[str, Any]]:
    """The judge model `ref` (store name or run id, `resolve_model`) as an in-process transformers
    backend (weights load on first use), and its identity {ref, weights, weights_sha256} for the
    proof record and the diff's stats."""
    model = resolve_model(registry, ref, tenant)
    identity = {"ref": ref, "weights": model.weights, "weights_sha256": sha256_json(model.weights)}
    return TransformersBackend(model.model_dir, model.adapter_dir), identity
