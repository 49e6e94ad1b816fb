"""`studio run`: chain import -> refine -> train -> eval (base, tuned) -> diff for one pipeline config.

Each step calls the same module its own verb calls; nothing here reaches into a stage's internals.
The train step goes through `studio train`'s launcher (engine/train/launch.py), so `train.method`
picks the recipe and the run records the method it trained: sft on the refined conversations, a
preference method on the pairs of the refine's preference stage (the config refuses any other,
engine/config/pipeline.py).

Time to first model (TTFM) is measured from the start of the command to the verdict on the tuned
model, i.e. until the first model *proven* better than its base exists. With `gate.judge` the diff
step also runs the pairwise judge (engine/eval/judged.py) on the customer tasks; its model is
resolved before any work starts.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.progress import Progress

from engine.config import StudioConfig, pipeline_train_problem
from engine.console import err
from engine.data.refine import refine
from engine.errors import StudioError
from engine.eval.diff import diff_evals
from engine.eval.judged import JudgeSetup, open_setup
from engine.eval.run import run_eval
from engine.eval.suite import load_suite, run_suite
from engine.generation.protocol import close_backend
from engine.models.store import import_model
from engine.registry import Registry
from engine.train.launch import train_run
from engine.workspace import Workspace

JUDGE_SUMMARY = ("model", "tuned_win_rate", "win_rate_ci", "consistency_rate", "tuned_wins", "base_wins",
                 "ties", "n_identical", "sign_test_p", "min_win_rate", "passed")


def ensure_model(cfg: StudioConfig, ws: Workspace, registry: Registry,
                 progress: Progress | None) -> dict[str, Any]:
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
    t0 = started if started is not None else time.monotonic()
    assert cfg.train is not None and cfg.refine is not None
    problem = pipeline_train_problem(cfg)  # a config built in code skips load-time validation
    if problem is not None:
        field, message = problem
        raise StudioError(message, where=f"{cfg.path}: {field}" if cfg.path else field)
    judge = open_pipeline_judge(cfg, ws, registry, progress)  # an unknown judge fails early
    try:
        return _run(cfg, ws, registry, progress, t0, judge)
    finally:
        if judge is not None:
            close_backend(judge.backend)


def open_pipeline_judge(cfg: StudioConfig, ws: Workspace, registry: Registry,
                        progress: Progress | None) -> JudgeSetup | None:
    """The diff step's pairwise judge from `gate.judge` (None when it is not set); the pipeline's
    own base model may be the judge (imported first when it is not in the store yet)."""
    spec = cfg.gate.judge
    if spec is None:
        return None
    if cfg.model is not None and spec.model == cfg.model.name:
        ensure_model(cfg, ws, registry, progress)
    return open_setup(registry, cfg.tenant, spec.model, rubric=spec.rubric,
                      min_win_rate=spec.min_win_rate, rationale_tokens=spec.rationale_tokens,
                      batch_size=cfg.eval.generation.batch_size if cfg.eval else 8,
                      progress=progress,
                      where=f"{cfg.path}: gate.judge" if cfg.path else "gate.judge")


def _run(cfg: StudioConfig, ws: Workspace, registry: Registry, progress: Progress | None,
         t0: float, judge: JudgeSetup | None) -> dict[str, Any]:
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
    run = train_run(train_cfg, ws, registry, progress=progress)  # the recipe of train.method
    t = lap("train", t)
    if cfg.eval.suite is not None:
        spec = cfg.eval.model_copy(update={"dataset": cfg.eval.dataset or f"{data.name}@v{data.version}"})
        tasks = _suite_diffs(cfg, spec, ws, registry, model["name"], run.run_id, progress, judge)
        t = lap("eval", t)
        main = next(d for d in tasks if not d["guard"])  # the headline: the first customer task
        base_eval, tuned_eval, result = main["base"], main["tuned"], main["result"]
    else:
        base_eval = run_eval(cfg.eval, ws, registry, tenant=cfg.tenant, model_ref=model["name"],
                             dataset=dataset, progress=progress)
        tuned_eval = run_eval(cfg.eval, ws, registry, tenant=cfg.tenant, model_ref=run.run_id,
                              dataset=dataset, progress=progress)
        t = lap("eval", t)
        result = _diff(cfg, ws, base_eval, tuned_eval, model["name"], run.run_id,
                       cfg.gate.require, cfg.eval.slice_key, judge=judge)
        tasks = []
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
        "gate_passed": result.gate_passed and all(d["result"].gate_passed for d in tasks),
        "base_eval": base_eval.eval_id,
        "tuned_eval": tuned_eval.eval_id,
        "report": str(result.report_path),
        "timings_s": timings,
    }
    if "judge" in result.stats:  # the headline task's pairwise judge
        summary["judge"] = {k: result.stats["judge"][k] for k in JUDGE_SUMMARY}
    if tasks:  # every suite task's own diff and gate (guard tasks: not worse than the base)
        summary["tasks"] = [{"task": d["task"], "guard": d["guard"], "gate": d["gate"],
                             "gate_passed": d["result"].gate_passed, "verdict": d["result"].verdict,
                             "base_score": d["result"].stats["overall"]["base_score"],
                             "tuned_score": d["result"].stats["overall"]["tuned_score"],
                             "base_eval": d["base"].eval_id, "tuned_eval": d["tuned"].eval_id,
                             "report": str(d["result"].report_path)} for d in tasks]
    (run.path / "pipeline.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _diff(cfg: StudioConfig, ws: Workspace, base: Any, tuned: Any, base_label: str, tuned_label: str,
          require: str, slice_key: str | None, guard: bool = False,
          judge: JudgeSetup | None = None) -> Any:
    out_dir = ws.eval_dir(cfg.tenant, f"diff-{base.eval_id}-vs-{tuned.eval_id}")
    return diff_evals(base.path, tuned.path, out_dir, alpha=cfg.gate.alpha, require=require,
                      margin=cfg.gate.guard_margin if guard else cfg.gate.margin,
                      per_slice=cfg.gate.per_slice and not guard, slice_key=slice_key,
                      base_label=base_label, tuned_label=tuned_label, judge=judge)


def _suite_diffs(cfg: StudioConfig, spec: Any, ws: Workspace, registry: Registry, base_ref: str,
                 run_id: str, progress: Progress | None,
                 judge: JudgeSetup | None = None) -> list[dict[str, Any]]:
    """Every task of the eval suite for base and tuned, and one diff per task: customer tasks
    against `gate.require` (and the pairwise judge when there is one), guard tasks (regression
    suites) against `not_worse`."""
    cfg_dir = cfg.path.parent if cfg.path else None
    tasks = load_suite(spec, cfg_dir, registry, cfg.tenant, cfg.resolve_path)
    if all(task.spec.guard for task in tasks):
        raise StudioError("the eval suite has only guard tasks; `studio run` needs a customer task "
                          "to decide on", where=f"{cfg.path}: eval.suite.tasks" if cfg.path else None)
    base = run_suite(spec, ws, registry, tenant=cfg.tenant, model_ref=base_ref, cfg_dir=cfg_dir,
                     tasks=tasks, progress=progress)
    tuned = run_suite(spec, ws, registry, tenant=cfg.tenant, model_ref=run_id, cfg_dir=cfg_dir,
                      tasks=tasks, progress=progress)
    out = []
    for task, b, t in zip(tasks, base, tuned):
        require = "not_worse" if task.spec.guard else cfg.gate.require
        slice_key = task.slice_keys[0] if task.slice_keys else cfg.eval.slice_key
        out.append({"task": task.name, "guard": task.spec.guard, "gate": require,
                    "base": b, "tuned": t,
                    "result": _diff(cfg, ws, b, t, base_ref, run_id, require, slice_key,
                                    guard=task.spec.guard,
                                    judge=None if task.spec.guard else judge)})
    return out
