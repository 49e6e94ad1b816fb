"""`studio eval CONFIG` and `studio diff BASE TUNED`: evaluate models, compare two evals behind a gate."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from engine.cli.context import JsonOpt, TenantOpt, emit, load, registry, ws
from engine.console import make_progress, out
from engine.errors import GateFailed, StudioError
from engine.privacy import jobs
from engine.registry import resolve_dataset


def eval_cmd(config: Path = typer.Argument(..., help="A config of kind 'eval'."),
             no_cache: bool = typer.Option(False, "--no-cache",
                                           help="Generate every output again (eval.cache: false)."),
             as_json: bool = JsonOpt) -> None:
    """Generate and grade each listed model on a dataset split."""
    # lazy: CLI start-up time (graders, generation backends)
    from engine.eval import run, suite

    cfg = load(config, "eval")
    spec = cfg.eval.model_copy(update={"cache": False}) if no_cache else cfg.eval
    workspace = ws()
    reg = registry(workspace)
    base_dir = config.resolve().parent
    jobs.begin(workspace, "eval", cfg.tenant, ids={"models": list(cfg.eval.models)}, cfg=cfg)
    results: list[dict[str, Any]] = []
    if spec.suite is not None:  # one eval per (model, task); relative task paths: config's folder
        # every task checked first; lm_eval folders through the job's path policy
        tasks = suite.load_suite(spec, base_dir, reg, cfg.tenant, cfg.resolve_path)
        with workspace.job_tmp(cfg.tenant), make_progress() as progress:
            for ref in cfg.eval.models:
                done = suite.run_suite(spec, workspace, reg, tenant=cfg.tenant, model_ref=ref,
                                       cfg_dir=base_dir, tasks=tasks, progress=progress,
                                       on_task=None if as_json else suite.print_result)
                results.extend({"eval_id": r.eval_id, "model_ref": r.model_ref, "task": r.task,
                                "guard": r.guard, "score": r.score, "n": r.n,
                                "graders": r.graders, "path": str(r.path)} for r in done)
        jobs.done(ids={"eval_ids": [r["eval_id"] for r in results]})
        emit(as_json, {"evals": results})
        return
    dataset = resolve_dataset(reg, cfg.tenant, cfg.eval.dataset)
    proofs: list[str | None] = []
    with workspace.job_tmp(cfg.tenant), make_progress() as progress:
        for ref in cfg.eval.models:
            res = run.run_eval(spec, workspace, reg, tenant=cfg.tenant, model_ref=ref,
                               dataset=dataset, progress=progress, base_dir=base_dir)
            if not as_json:
                out.print(f"eval [bold]{res.eval_id}[/]  {ref} scored {res.score:.3f} on {res.n} items")
            proofs.append(res.proof_sha256)
            results.append({"eval_id": res.eval_id, "model_ref": ref, "score": res.score, "n": res.n,
                            "path": str(res.path), "proof_sha256": res.proof_sha256})
    dataset_ref = f"{dataset['name']}@v{dataset['version']}"
    jobs.done(ids={"eval_ids": [r["eval_id"] for r in results], "dataset": dataset_ref},
              hashes={"dataset": dataset["sha256"], "proofs": [p for p in proofs if p]})
    emit(as_json, {"evals": results, "dataset": dataset_ref})


def diff(
    base_eval: str = typer.Argument(..., help="Eval id of the base model."),
    tuned_eval: str = typer.Argument(..., help="Eval id of the tuned model."),
    tenant: str = TenantOpt,
    alpha: float = typer.Option(0.01, help="Significance level."),
    require: str = typer.Option("better", help="Gate: better | not_worse | none."),
    margin: float = typer.Option(0.02, help="Non-inferiority margin (not_worse, --per-slice)."),
    per_slice: bool = typer.Option(False, "--per-slice",
                                   help="Every slice must also be non-inferior at the margin."),
    slice_key: Optional[str] = typer.Option(None, "--slice", help="Item meta key to slice by."),
    judge: Optional[str] = typer.Option(None, "--judge", metavar="MODEL",
                                        help="Pairwise judge: a local model (store name or run "
                                        "id) compares each pair of differing outputs, both orders."),
    judge_rubric: Optional[str] = typer.Option(None, "--judge-rubric",
                                               help="What a better reply is (default: the "
                                               "support rubric)."),
    judge_min_win_rate: Optional[float] = typer.Option(
        None, "--judge-min-win-rate", help="Gate: the lower bound of the judge's 95% win-rate "
        "interval must be at least this (0-1)."),
    judge_rationale_tokens: int = typer.Option(48, "--judge-rationale-tokens",
                                               help="Length bound of each rationale; 0: none."),
    as_json: bool = JsonOpt,
) -> None:
    """Paired comparison of two evals: buckets, paired tests, HTML report; gate exit code 3."""
    # lazy: CLI start-up time (scipy; the judge's transformers backend)
    from engine.eval import diff as eval_diff, judged

    if require not in ("better", "not_worse", "none"):
        raise StudioError(f"--require must be better, not_worse or none, got {require!r}")
    if judge is None:
        given = [name for name, v in (("--judge-rubric", judge_rubric),
                                      ("--judge-min-win-rate", judge_min_win_rate)) if v is not None]
        if given:
            raise StudioError(f"{given[0]} needs a judge model", where=given[0],
                              hint="add --judge MODEL (a store name or run id)")
    workspace = ws()
    reg = registry(workspace)
    jobs.begin(workspace, "diff", tenant, ids={"base_eval": base_eval, "tuned_eval": tuned_eval,
                                               "require": require, "judge": judge})
    rows = []
    for eid in (base_eval, tuned_eval):
        row = reg.get_eval(eid)
        if row is None or row["tenant"] != tenant:
            raise StudioError(f"unknown eval {eid!r} for tenant {tenant!r}",
                              hint="eval ids are printed by `studio eval` and `studio run`")
        rows.append(row)
    out_dir = workspace.eval_dir(tenant, f"diff-{base_eval}-vs-{tuned_eval}")
    with ExitStack() as stack:  # the judge: its libraries' caches in the job's scratch, a bar
        setup = None
        if judge is not None:
            stack.enter_context(workspace.job_tmp(tenant))
            progress = stack.enter_context(make_progress())
            setup = judged.open_setup(reg, tenant, judge, rubric=judge_rubric,
                                      min_win_rate=judge_min_win_rate,
                                      rationale_tokens=judge_rationale_tokens, progress=progress,
                                      where="--judge")
        res = eval_diff.diff_evals(Path(rows[0]["path"]), Path(rows[1]["path"]), out_dir, alpha=alpha,
                         require=require, margin=margin, per_slice=per_slice, slice_key=slice_key,
                         base_label=rows[0]["model_ref"], tuned_label=rows[1]["model_ref"],
                         judge=setup)
    o = res.stats["overall"]
    lines = [f"base {o['base_score']:.3f}  tuned {o['tuned_score']:.3f}  "
             f"fixed {o['fixed']}  broke {o['broke']}  p={o['p_value']:.3g}  "
             f"verdict [bold]{res.stats['verdict']}[/]"]
    if "judge" in res.stats:
        lines.append(judge_line(res.stats["judge"]))
    emit(as_json, {"verdict": res.verdict, "gate_passed": res.gate_passed,
                   "report": str(res.report_path), "stats": res.stats},
         [*lines, f"report: {res.report_path}"])
    jobs.done(ids={"verdict": res.verdict, "gate_passed": res.gate_passed},
              hashes={"report": jobs.file_sha256(res.report_path)})
    if not res.gate_passed:
        failed = res.stats["gate"]["failed_slices"]
        extra = f"; not non-inferior on slices: {', '.join(failed)}" if failed else ""
        j = res.stats.get("judge") or {}
        if j.get("passed") is False:
            extra += (f"; judge win rate lower bound {_pct(j['win_rate_ci'][0])} < "
                      f"{_pct(j['min_win_rate'])}")
        raise GateFailed(f"gate '{require}' failed: verdict {res.verdict}{extra}")


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def judge_line(j: dict[str, Any]) -> str:
    """The console summary of a diff's pairwise judge (stats["judge"])."""
    lo, hi = j["win_rate_ci"]
    gate = ""
    if j.get("min_win_rate") is not None:
        gate = f"  gate ≥ {_pct(j['min_win_rate'])} " + ("[green]pass[/]" if j["passed"] else "[red]FAIL[/]")
    return (f"judge {escape(str(j['model']))}: tuned win rate {_pct(j['tuned_win_rate'])} "
            f"[{_pct(lo)}, {_pct(hi)}]  tuned {j['tuned_wins']} / base {j['base_wins']} / "
            f"ties {j['ties']} ({j['n_identical']} identical)  consistent "
            f"{_pct(j['consistency_rate'])}  sign p={j['sign_test_p']:.3g}{gate}")
