"""Run one eval: a model (store name or run id) on a dataset split, graded, written to evals/<id>/.

An item is a conversation cut before its final assistant turn: the prompt is everything before
it and the reference is its content. Item ids and hashes let `diff` pair two evals safely.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.progress import Progress

from engine.config import EvalSpec
from engine.errors import StudioError
from engine.eval.cache import GenerationCache, cached_generate
from engine.eval.graders import grade
from engine.eval.proof import build_proof, write_proof
from engine.hashing import file_manifest, sha256_file, sha256_json
from engine.registry import Registry
from engine.workspace import Workspace


@dataclass
class EvalResult:
    eval_id: str
    path: Path
    model_ref: str
    n: int
    score: float
    cache: dict[str, Any] = field(default_factory=dict)  # CacheStats.as_dict(): hits, misses, ...
    proof_sha256: str | None = None


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
            from engine.train.export import parent_weights

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


def load_items(dataset: dict[str, Any], split: str, limit: int | None = None) -> list[dict[str, Any]]:
    path = Path(dataset["path"]) / f"{split}.jsonl"
    if not path.is_file():
        raise StudioError(f"dataset has no {split} split", where=str(path))
    items = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            msgs = rec["messages"]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is None:
                continue
            prompt, reference = msgs[:last], msgs[last]["content"]
            items.append({"item_id": rec["id"], "prompt": prompt, "reference": reference,
                          "meta": rec.get("meta", {}),
                          "item_hash": sha256_json({"prompt": prompt, "reference": reference})})
    if not items:
        raise StudioError(f"the {split} split has no items with an assistant answer", where=str(path))
    return items[:limit] if limit else items


def new_eval_id() -> str:
    return datetime.now(timezone.utc).strftime("eval-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def run_eval(spec: EvalSpec, ws: Workspace, registry: Registry, *, tenant: str, model_ref: str,
             dataset: dict[str, Any], progress: Progress | None = None,
             backend: Any = None, judge: dict[str, Any] | None = None,
             base_dir: Path | None = None) -> EvalResult:
    """`judge`: the judge model's identity for the proof record; by default the weights of
    `grader.model` when the grader names one. With `spec.suite`, every task runs as its own eval
    (engine/eval/tasks.py; `base_dir`: the config's folder), one line per task is printed, and
    the first task's result is returned."""
    if spec.suite is not None:
        from engine.eval.tasks import print_result, run_suite

        return run_suite(spec, ws, registry, tenant=tenant, model_ref=model_ref, cfg_dir=base_dir,
                         progress=progress, backend=backend, on_task=print_result)[0]
    ref = resolve_model(registry, model_ref, tenant)
    judge_ref = getattr(spec.grader, "model", None)
    if judge is None and judge_ref:
        judged_by = resolve_model(registry, judge_ref, tenant)
        judge = {"ref": judge_ref, "weights": judged_by.weights,
                 "weights_sha256": sha256_json(judged_by.weights)}
    items = load_items(dataset, spec.split, spec.limit)
    own_backend = backend is None
    if backend is None:
        from engine.eval.generate import make_backend

        backend = make_backend(spec, ref.model_dir, ref.adapter_dir)  # loads/starts on first miss
    gen = spec.generation
    cache = GenerationCache.for_tenant(ws, tenant) if spec.cache else None
    try:
        outputs, cache_stats = cached_generate(
            backend, [it["prompt"] for it in items], model_identity=ref.weights,
            max_new_tokens=gen.max_new_tokens, batch_size=gen.batch_size,
            temperature=gen.temperature, seed=gen.seed, cache=cache, progress=progress,
            label=f"eval {model_ref}"[:40])
    finally:
        if own_backend:
            from engine.eval.generate import close_backend

            close_backend(backend)
    eval_id = new_eval_id()
    out_dir = ws.eval_dir(tenant, eval_id)
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    tmp_dir.mkdir(parents=True, mode=0o700)
    scores = [grade(spec.grader, out, it["reference"]) for out, it in zip(outputs, items)]
    with (tmp_dir / "outputs.jsonl").open("w", encoding="utf-8") as f:
        for it, out, score in zip(items, outputs, scores):
            f.write(json.dumps({**it, "output": out, "score": score}, ensure_ascii=False) + "\n")
    dataset_ref = f"{dataset['name']}@v{dataset['version']}"
    summary = {
        "eval_id": eval_id, "model_ref": model_ref, "model_identity": ref.identity,
        "dataset": dataset_ref, "dataset_sha256": dataset["sha256"], "split": spec.split,
        "n": len(items), "score": sum(scores) / len(scores),
        "grader": spec.grader.model_dump(), "settings": spec.generation.model_dump(),
        "cache": cache_stats.as_dict(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    proof = build_proof(spec, items, ref, dataset, backend=backend, judge=judge, eval_id=eval_id)
    write_proof(tmp_dir, proof)
    summary["proof_sha256"] = proof["proof_sha256"]
    (tmp_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    os.rename(tmp_dir, out_dir)
    registry.put_eval(eval_id, tenant, "eval", model_ref, dataset_ref, out_dir,
                      {"n": summary["n"], "score": summary["score"]})
    return EvalResult(eval_id, out_dir, model_ref, summary["n"], summary["score"],
                      summary["cache"], summary["proof_sha256"])
