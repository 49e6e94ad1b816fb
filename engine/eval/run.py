"""Run one eval: a model (store name or run id) on a dataset split, graded, written to evals/<id>/.

The items come from engine/eval/items.py; an eval config with a suite runs every task of it as
its own eval (engine/eval/suite.py). Item ids and hashes let `diff` pair two evals safely.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.progress import Progress

from engine.config import EvalSpec
from engine.eval.cache import GenerationCache, cached_generate
from engine.eval.items import EvalResult, load_items, new_eval_id
from engine.eval.proof import build_proof, write_proof
from engine.eval.suite import print_result, run_suite
from engine.generation.factory import make_backend
from engine.generation.protocol import close_backend
from engine.grading.graders import grade
from engine.hashing import sha256_json
from engine.models.resolve import resolve_model
from engine.registry import Registry
from engine.workspace import Workspace


def run_eval(spec: EvalSpec, ws: Workspace, registry: Registry, *, tenant: str, model_ref: str,
             dataset: dict[str, Any], progress: Progress | None = None,
             backend: Any = None, judge: dict[str, Any] | None = None,
             base_dir: Path | None = None) -> EvalResult:
    """`judge`: the judge model's identity for the proof record; by default the weights of
    `grader.model` when the grader names one. With `spec.suite`, every task runs as its own eval
    (engine/eval/suite.py; `base_dir`: the config's folder), one line per task is printed, and
    the first task's result is returned."""
    if spec.suite is not None:
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
            close_backend(backend)
    eval_id = new_eval_id()
    out_dir = ws.eval_dir(tenant, eval_id)
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    tmp_dir.mkdir(parents=True, mode=0o700)
    # everything is written into <id>.partial and renamed into place, then registered; an
    # error, Ctrl-C or SIGTERM on the way removes what was written (no eval half there)
    written = tmp_dir
    try:
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
        written = out_dir
        registry.put_eval(eval_id, tenant, "eval", model_ref, dataset_ref, out_dir,
                          {"n": summary["n"], "score": summary["score"]})
    except BaseException:
        shutil.rmtree(written, ignore_errors=True)
        raise
    return EvalResult(eval_id, out_dir, model_ref, summary["n"], summary["score"],
                      summary["cache"], summary["proof_sha256"])
