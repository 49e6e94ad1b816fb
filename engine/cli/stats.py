"""`studio stats` (TTFM, retrain rate, inferences per custom model) and `studio stats usage`."""

from __future__ import annotations

from typing import Optional

import typer

from engine.cli.context import JsonOpt, OptionalTenantOpt, emit, table, ws
from engine.console import out
from engine.metrics import compute

app = typer.Typer(help="Product metrics: TTFM, retrain rate, inferences per model.",
                  invoke_without_command=True)


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 3600:
        return f"{s:.0f} s"
    return f"{s / 3600:.1f} h" if s < 172800 else f"{s / 86400:.1f} d"


@app.callback()
def stats_overview(
    ctx: typer.Context,
    tenant: Optional[str] = typer.Option(None, "--tenant", "-t", help="One tenant [default: all]."),
    month: Optional[str] = typer.Option(None, "--month", help="Only this month (YYYY-MM) in per-month tables."),
    as_json: bool = JsonOpt,
) -> None:
    """Time to first model, retrain rate and inferences per custom model (default: everything)."""
    if ctx.invoked_subcommand is not None:  # e.g. `studio stats usage`
        return
    data = compute(ws(), tenant, month)

    def human() -> None:
        out.print(table(["tenant", "project", "TTFM", "first model", "definition"],
                        [[r["tenant"], r["project"], _fmt_seconds(r["seconds"]), r["run_id"] or "—",
                          r["definition"] or "no model yet"] for r in data["ttfm"]],
                        title="Time to first model"))
        rate = data["retrain"]["runs_per_lineage_per_month"]
        out.print(table(["tenant", "base model", "project", "month", "runs"],
                        [[r["tenant"], r["base_model"], r["project"], r["month"], r["runs"]]
                         for r in data["retrain"]["per_lineage_month"]],
                        title=f"Retrain rate: {rate} runs per lineage per month"))
        out.print(table(["tenant", "model", "month", "requests"],
                        [[r["tenant"], r["model"], r["month"], r["requests"]] for r in data["inferences"]],
                        title="Inferences per custom model"
                        + ("" if data["sources"]["usage"] else " (no usage recorded yet)")))

    emit(as_json, data, human)


@app.command("usage")
def stats_usage(month: str = typer.Option(..., "--month", help="YYYY-MM (UTC)."),
                tenant: Optional[str] = OptionalTenantOpt,
                daily: bool = typer.Option(False, "--daily", help="One row per day."),
                as_json: bool = JsonOpt) -> None:
    """Requests, tokens and errors per tenant and model for one month."""
    # lazy: CLI start-up time
    from engine.serve.usage import COUNTS, UsageStore, check_month

    check_month(month)
    store = UsageStore(ws().registry_path)
    rows = store.rows(month, tenant) if daily else store.monthly(month, tenant)

    def human() -> None:
        if not rows:
            out.print(f"no usage in {month}")
            return
        out.print(table(["tenant", "model", "day" if daily else "days", *COUNTS],
                        [[r["tenant"], r["model"], r["day"] if daily else r["days"],
                          *(f"{r[k]:,}" for k in COUNTS)] for r in rows]))

    emit(as_json, rows, human)
