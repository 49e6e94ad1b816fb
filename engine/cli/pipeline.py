"""`studio run PIPELINE.yaml`: import -> refine -> train -> eval base and tuned -> diff, in one go."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from engine.cli.context import load, registry, ws
from engine.cli.evaluation import judge_line
from engine.console import err, make_progress, out
from engine.errors import GateFailed
from engine.privacy import jobs


def run(
    config: Path = typer.Argument(..., help="A config of kind 'pipeline' (e.g. configs/quickstart.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="End with a one-line JSON summary on stdout."),
) -> None:
    """Import -> refine -> train -> eval base and tuned -> diff, in one go."""
    t0 = time.monotonic()
    cfg = load(config, "pipeline")
    workspace = ws()
    jobs.begin(workspace, "run", cfg.tenant, cfg=cfg)
    with workspace.job_tmp(cfg.tenant), make_progress() as progress:
        # lazy: CLI start-up time; and the trainer's libraries read the cache variables that
        # job_tmp has just pointed into the tenant's scratch directory
        from engine.flow import run_pipeline

        summary = run_pipeline(cfg, workspace, registry(workspace), progress=progress, started=t0)
    jobs.done(ids={k: summary.get(k) for k in ("run_id", "dataset", "verdict", "gate_passed")},
              registry=registry(workspace))
    out_console = err if as_json else out
    out_console.print(
        f"[bold]time to first model {summary['ttfm_seconds']:.0f} s[/]  run {summary['run_id']}\n"
        f"base {summary['base_score']:.3f} -> tuned {summary['tuned_score']:.3f}  "
        f"p={summary['p_value']:.3g}  verdict [bold]{summary['verdict']}[/]\nreport: {summary['report']}")
    if "judge" in summary:
        out_console.print(judge_line(summary["judge"]))
    for task in summary.get("tasks", []):
        mark = "[green]pass[/]" if task["gate_passed"] else "[red]FAIL[/]"
        out_console.print(f"  {task['task']}{' (guard)' if task['guard'] else ''}: base "
                          f"{task['base_score']:.3f} -> tuned {task['tuned_score']:.3f}  verdict "
                          f"{task['verdict']}  gate {task['gate']} {mark}")
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    if not summary["gate_passed"]:
        failed = [t["task"] for t in summary.get("tasks", []) if not t["gate_passed"]]
        extra = f"; failed tasks: {', '.join(failed)}" if failed else ""
        if (summary.get("judge") or {}).get("passed") is False:
            extra += "; the judge's win rate is below gate.judge.min_win_rate"
        raise GateFailed(f"gate '{cfg.gate.require}' failed: verdict {summary['verdict']}{extra}")
