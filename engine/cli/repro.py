"""`studio reproduce RUN_ID`: re-train a run from its manifest and certify it (engine/repro/)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape

from engine.cli.context import JsonOpt, TenantOpt, emit, registry, table, ws
from engine.console import err, make_progress, out
from engine.privacy import jobs


def reproduce_cmd(
    run_id: str = typer.Argument(..., help="A finished run to rebuild from its manifest."),
    tenant: str = TenantOpt,
    allow_drift: bool = typer.Option(False, "--allow-drift",
                                     help="Re-train even when inputs or packages changed (the "
                                          "certificate then fails its inputs check)."),
    tolerance: Optional[list[str]] = typer.Option(
        None, "--tolerance", metavar="[KEY=]VALUE",
        help="Max abs difference allowed: one number for every check, or loss=, grad_norm=, "
             "learning_rate=, metrics=, weights= (repeatable). Default: exact on CPU."),
    as_json: bool = JsonOpt,
) -> None:
    """Re-train a run from its manifest and certify it: reproducibility.json (exit 3 on a failure)."""
    # lazy: CLI start-up time (the trainer's launcher and config models)
    from engine.repro.reproduce import ReproductionFailed, parse_tolerances, reproduce

    parse_tolerances(tolerance, gpu=False)  # a bad --tolerance fails before any work
    workspace = ws()

    def warn(drift: object) -> None:
        for line in getattr(drift, "refusals"):
            err.print(f"[yellow]drift (allowed):[/] {escape(line)}")
        for line in getattr(drift, "notes"):
            err.print(f"[dim]note:[/] {escape(line)}")

    jobs.begin(workspace, "reproduce", tenant, ids={"run_id": run_id, "allow_drift": allow_drift})
    with workspace.job_tmp(tenant), make_progress() as progress:
        res = reproduce(workspace, registry(workspace), run_id, tenant, allow_drift=allow_drift,
                        tolerances=tolerance, progress=progress, on_drift=warn)
    certificate = res.path / "reproducibility.json"
    jobs.done(ids={"new_run_id": res.run_id, "passed": res.passed},
              hashes={"certificate": jobs.file_sha256(certificate)})

    def human() -> None:
        rows = []
        for name, check in res.certificate["checks"].items():
            diff = check.get("max_abs_diff")
            rows.append([name, "[green]pass[/]" if check["passed"] else "[red]FAIL[/]",
                         "" if diff is None else f"{diff:.3g}", check.get("tolerance", "")])
        out.print(table(["check", "result", "max abs diff", "tolerance"], rows))
        out.print(f"run [bold]{res.run_id}[/] reproduces {run_id}: certificate "
                  f"{'[green]passed[/]' if res.passed else '[red]FAILED[/]'}  {certificate}")

    emit(as_json, {"run_id": res.run_id, "original": run_id, "passed": res.passed,
                   "certificate_path": str(certificate), "certificate": res.certificate}, human)
    if not res.passed:
        failed = [k for k, c in res.certificate["checks"].items() if not c["passed"]]
        raise ReproductionFailed(f"reproduction of {run_id} failed: {', '.join(failed)}")
