"""`studio refine CONFIG` and `studio datasets list`: raw logs to versioned datasets.

A refine whose PII leak gate fails (engine.errors.PiiLeak) exits 3 like every failed gate; with
`--json` it first prints the gate's document (per-type residuals, no dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from engine.cli.context import JsonOpt, TenantOpt, emit, load, registry, table, ws
from engine.console import make_progress, out
from engine.errors import PiiLeak
from engine.privacy import jobs

datasets_app = typer.Typer(no_args_is_help=True, help="Refined dataset versions.")


def refine(config: Path = typer.Argument(..., help="A config of kind 'refine'."),
           as_json: bool = JsonOpt) -> None:
    """Raw logs -> a new dataset version (train/val/eval, rejects, lineage, card)."""
    cfg = load(config, "refine")
    workspace = ws()
    jobs.begin(workspace, "refine", cfg.tenant, cfg=cfg)
    try:
        with workspace.job_tmp(cfg.tenant), make_progress() as progress:
            # lazy: CLI start-up time (numpy, datasketch)
            from engine.data.refine import refine as run_refine

            res = run_refine(cfg, workspace, registry(workspace), progress)
    except PiiLeak as exc:  # a failed gate: with --json its document first, then exit 3
        if as_json:
            emit(True, {"dataset": cfg.refine.dataset, "gate": "pii_residual", "gate_passed": False,
                        "pii_residual": exc.residual, "error": exc.what, "hint": exc.hint})
        raise
    jobs.done(ids={"dataset": res.name, "version": res.version, **{
        k: v for k, v in res.counts.items() if isinstance(v, int)}},
        hashes={"dataset": res.sha256}, result=res)
    emit(as_json, {"dataset": res.name, "version": res.version, "ref": res.ref,
                   "path": str(res.path), "sha256": res.sha256, "counts": res.counts,
                   "card": str(res.path / "card.html"), "gate_passed": True,
                   "pii_residual": res.pii_residual},
         [f"dataset [bold]{res.name}@v{res.version}[/]: {split_text(res.counts)}",
          *residual_text(res.pii_residual),
          f"card: {res.path / 'card.html'} (data: {res.path / 'card.json'})"])


def residual_text(residual: dict[str, dict[str, Any]]) -> list[str]:
    """One line naming the PII types the leak gate still found (report-only or within their max)."""
    found = [f"{kind} {info['count']} (" + ("report only" if info["max"] is None
                                            else f"max {info['max']}") + ")"
             for kind, info in residual.items() if info.get("count")]
    return [f"PII left in the written records: {', '.join(found)}"] if found else []


def split_text(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "eval")) + \
        f"; rejected {counts.get('rejected', 0)} of {counts.get('input_records', 0)} raw records"


@datasets_app.command("list")
def datasets_list(tenant: str = TenantOpt, as_json: bool = JsonOpt) -> None:
    """List dataset versions of a tenant."""
    rows = registry(ws()).list_datasets(tenant)

    def human() -> None:
        body = []
        for r in rows:
            c = r["counts"] or {}
            body.append([r["name"], f"v{r['version']}", *(c.get(k, "") for k in ("train", "val", "eval")),
                         c.get("rejected", ""), r["created_at"]])
        out.print(table(["dataset", "version", "train", "val", "eval", "rejected", "created"], body))

    emit(as_json, rows, human)
