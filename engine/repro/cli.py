"""`studio reproduce RUN_ID`: the CLI face of engine/repro/reproduce.py (registered in engine/cli.py)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from engine.console import err, make_progress, out


def reproduce_cmd(
    run_id: str = typer.Argument(..., help="A finished run to rebuild from its manifest."),
    tenant: str = typer.Option("default", "--tenant", "-t", help="Tenant."),
    allow_drift: bool = typer.Option(False, "--allow-drift",
                                     help="Re-train even when inputs or packages changed (the "
                                          "certificate then fails its inputs check)."),
    tolerance: Optional[list[str]] = typer.Option(
        None, "--tolerance", metavar="[KEY=]VALUE",
        help="Max abs difference allowed: one number for every check, or loss=, grad_norm=, "
             "learning_rate=, metrics=, weights= (repeatable). Default: exact on CPU."),
) -> None:
    """Re-train a run from its manifest and certify it: reproducibility.json (exit 3 on a failure)."""
    from engine.cli import _registry, _ws
    from engine.repro.reproduce import ReproductionFailed, parse_tolerances, reproduce

    parse_tolerances(tolerance, gpu=False)  # a bad --tolerance fails before any work
    ws = _ws()

    def warn(drift: object) -> None:
        for line in getattr(drift, "refusals"):
            err.print(f"[yellow]drift (allowed):[/] {escape(line)}")
        for line in getattr(drift, "notes"):
            err.print(f"[dim]note:[/] {escape(line)}")

    from engine.privacy import jobs

    jobs.begin(ws, "reproduce", tenant, ids={"run_id": run_id, "allow_drift": allow_drift})
    with ws.job_tmp(tenant), make_progress() as progress:
        res = reproduce(ws, _registry(ws), run_id, tenant, allow_drift=allow_drift,
                        tolerances=tolerance, progress=progress, on_drift=warn)
    jobs.done(ids={"new_run_id": res.run_id, "passed": res.passed},
              hashes={"certificate": jobs.file_sha256(res.path / "reproducibility.json")})
    table = Table("check", "result", "max abs diff", "tolerance")
    for name, check in res.certificate["checks"].items():
        diff = check.get("max_abs_diff")
        table.add_row(name, "[green]pass[/]" if check["passed"] else "[red]FAIL[/]",
                      "" if diff is None else f"{diff:.3g}", str(check.get("tolerance", "")))
    out.print(table)
    out.print(f"run [bold]{res.run_id}[/] reproduces {run_id}: certificate "
              f"{'[green]passed[/]' if res.passed else '[red]FAILED[/]'}  "
              f"{res.path / 'reproducibility.json'}")
    if not res.passed:
        failed = [k for k, c in res.certificate["checks"].items() if not c["passed"]]
        raise ReproductionFailed(f"reproduction of {run_id} failed: {', '.join(failed)}")
