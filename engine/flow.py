"""`studio run`: chain import -> refine -> train -> eval (base, tuned) -> diff for one pipeline config.

Each step calls the same module its own verb calls; nothing here reaches into a stage's internals.
Time to first model (TTFM) is measured from the start of the command to the verdict on the tuned
model, i.e. until the first model *proven* better than its base exists.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.progress import Progress

from engine.config import StudioConfig
from engine.console import err
from engine.errors import StudioError
from engine.registry import Registry
from engine.workspace import Workspace


def ensure_model(cfg: StudioConfig, ws: Workspace, registry: Registry,
                 progress: Progress | None) -> dict[str, Any]:
    from engine.models.store import import_model

    assert cfg.model is not None
    row = registry.get_model(cfg.model.name)
    if row is not None:
        return row
    if not cfg.model.source:
        raise StudioError(f"model {cfg.model.name!r} is not in the store and has no source",
                          where=f"{cfg.path}: model.source" if cfg.path else "model.source",
                          hint="set model.source or run `studio models import`")
    source = cfg.model.source
    if not source.startswith("builtin:"):
        source = str(cfg.resolve_path(source))
    return import_model(ws, registry, source, cfg.model.name, progress=progress)


def run_pipeline(cfg: StudioConfig, ws: Workspace, registry: Registry, *,
                 progress: Progress | None = None, started: float | None = None) -> dict[str, Any]:
    from engine.data.pipeline import refine
    from engine.eval.diff import diff_evals
    from engine.eval.suite import run_eval
    from engine.train.sft import train_sft

    t0 = started if started is not None else time.monotonic()
    assert cfg.model and cfg.refine and cfg.train and cfg.eval
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 2)
        return now

    t = time.monotonic()
    model = ensure_model(cfg, ws, registry, progress)
    t = lap("import", t)
    data = refine(cfg, ws, registry, progress)
    c = data.counts
    err.print(f"refined {data.name}@v{data.version}: {c['input_records']} raw records, "
              f"{c['rejected']} rejected; train {c['train']}, val {c['val']}, eval {c['eval']}")
    t = lap("refine", t)
    dataset = registry.get_dataset(cfg.tenant, data.name, data.version)
    assert dataset is not None
    train_cfg = cfg.model_copy(deep=True)  # the run records exactly which version it trained on
    train_cfg.train.base_model = model["name"]
    train_cfg.train.dataset = f"{data.name}@v{data.version}"
    train_cfg._path = cfg.path
    run = train_sft(train_cfg, ws, registry, progress=progress)
    t = lap("train", t)
    base_eval = run_eval(cfg.eval, ws, registry, tenant=cfg.tenant, model_ref=model["name"],
                         dataset=dataset, progress=progress)
    tuned_eval = run_eval(cfg.eval, ws, registry, tenant=cfg.tenant, model_ref=run.run_id,
                          dataset=dataset, progress=progress)
    t = lap("eval", t)
    out_dir = ws.eval_dir(cfg.tenant, f"diff-{base_eval.eval_id}-vs-{tuned_eval.eval_id}")
    result = diff_evals(base_eval.path, tuned_eval.path, out_dir, alpha=cfg.gate.alpha,
                        require=cfg.gate.require, margin=cfg.gate.margin,
                        per_slice=cfg.gate.per_slice, slice_key=cfg.eval.slice_key,
                        base_label=model["name"], tuned_label=run.run_id)
    lap("diff", t)
    overall = result.stats["overall"]
    summary = {
        "ttfm_seconds": round(time.monotonic() - t0, 1),
        "run_id": run.run_id,
        "tenant": cfg.tenant,
        "dataset": f"{data.name}@v{data.version}",
        "base_model": model["name"],
        "n_eval": overall["n"],
        "base_score": overall["base_score"],
        "tuned_score": overall["tuned_score"],
        "p_value": overall["p_value"],
        "test": overall.get("test", "mcnemar_exact"),
        "verdict": result.verdict,
        "gate": cfg.gate.require,
        "gate_passed": result.gate_passed,
        "base_eval": base_eval.eval_id,
        "tuned_eval": tuned_eval.eval_id,
        "report": str(result.report_path),
        "timings_s": timings,
    }
    (run.path / "pipeline.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
