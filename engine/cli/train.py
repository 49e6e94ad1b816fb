"""`studio train`, `studio export` and `studio runs list|show`: training runs and their weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from engine.cli.context import JsonOpt, TenantOpt, emit, load, registry, table, ws
from engine.console import make_progress, out
from engine.errors import StudioError
from engine.privacy import jobs

runs_app = typer.Typer(no_args_is_help=True, help="Training runs.")


def train(
    config: Path = typer.Argument(..., help="A config of kind 'train'."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve config, data and template; do not train."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID",
                                         help="Continue this unfinished run from its last checkpoint."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1,
                                        help="Train with N processes on this machine (torchrun)."),
    force: bool = typer.Option(False, "--force",
                               help="Start even when the preflight estimate exceeds the device's memory."),
    as_json: bool = JsonOpt,
) -> None:
    """Train a run on a dataset version (--resume continues one, --nproc N runs N processes)."""
    cfg = load(config, "train")
    workspace = ws()
    reg = registry(workspace)
    jobs.begin(workspace, "train.dry_run" if dry_run else "train", cfg.tenant, cfg=cfg)
    with workspace.job_tmp(cfg.tenant):
        # lazy: CLI start-up time; and libraries imported below read the cache variables that
        # job_tmp has just pointed into the tenant's scratch directory
        from engine.train import launch, preview

        if dry_run:
            report = preview.preview(cfg, reg)
            print(json.dumps(report, indent=2))
            if report.get("gate", "passed") != "passed":
                raise StudioError(f"template/mask gate {report['gate']}", where=str(config))
            jobs.done()
            return
        with make_progress() as progress:
            res = launch.train_run(cfg, workspace, reg, progress=progress, resume=resume,
                                   nproc=nproc, force=force)
    if res is None:  # one worker of several: the launching command reports
        jobs.done(ids={"worker": True})
        return
    jobs.done(ids={"run_id": res.run_id, "steps": res.metrics.get("steps")},
              hashes={"manifest": jobs.file_sha256(res.path / "manifest.json")}, registry=reg)
    emit(as_json, {"run_id": res.run_id, "path": str(res.path), "output": str(res.adapter_dir),
                   "metrics": res.metrics},
         f"run [bold]{res.run_id}[/] finished: {res.metrics['steps']} steps, "
         f"loss {res.metrics['final_loss']}, {res.metrics['train_seconds']} s")


def export(
    run_id: str = typer.Argument(..., help="A finished run."),
    merge: bool = typer.Option(False, "--merge", help="Merge the adapter into the base weights."),
    dtype: str = typer.Option("auto", "--dtype", metavar="DTYPE",
                              help="Merged weights: auto (the base model's dtype), float32, bfloat16 "
                                   "or float16. The merge itself runs in float32."),
    tenant: str = TenantOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Export a run's adapter, or with --merge one merged safetensors model (with lineage)."""
    workspace = ws()
    jobs.begin(workspace, "export", tenant, ids={"run_id": run_id, "merge": merge, "dtype": dtype})
    with workspace.job_tmp(tenant):
        # lazy: CLI start-up time (pydantic policy, transformers when merging)
        from engine.models.export import export_run

        path = export_run(workspace, registry(workspace), run_id, tenant, merge=merge, dtype=dtype)
    jobs.done(ids={"path": str(Path(path).relative_to(workspace.root)) if Path(path).is_relative_to(
        workspace.root) else Path(path).name})
    kind = "merged" if merge else "adapter"
    out_dtype = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8")).get("dtype")
    emit(as_json, {"run_id": run_id, "kind": kind, "path": str(path), "dtype": out_dtype},
         f"exported {f'merged model ({out_dtype})' if merge else 'adapter'} of {run_id} to {path}")


@runs_app.command("list")
def runs_list(tenant: str = TenantOpt, as_json: bool = JsonOpt) -> None:
    """List training runs of a tenant."""
    rows = registry(ws()).list_runs(tenant)

    def human() -> None:
        body = []
        for r in rows:
            loss = (r["metrics"] or {}).get("final_loss")
            body.append([r["run_id"], r["status"], r["method"], r["base_model"],
                         r.get("parent_run") or "", r["dataset"],
                         "" if loss is None else f"{loss:.4f}", r["created_at"]])
        out.print(table(["run", "status", "method", "base model", "parent run", "dataset",
                         "final loss", "created"], body))

    emit(as_json, rows, human)


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(...),
              as_json: bool = typer.Option(False, "--json", help="Print JSON (the default: this "
                                                                 "verb always prints JSON).")) -> None:
    """Show a run: registry row and its manifest (JSON)."""
    row = registry(ws()).get_run(run_id)
    if row is None:
        raise StudioError(f"unknown run {run_id!r}", hint="see `studio runs list`")
    manifest_path = Path(row["path"]) / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    if manifest:
        manifest.pop("lockfile", None)
    print(json.dumps({"run": row, "manifest": manifest}, indent=None if as_json else 2, sort_keys=True))
