"""The `studio` CLI (Typer): each verb parses its arguments, calls one module, prints the result.

Human messages and progress go to stderr, results to stdout. A StudioError prints one message
(what, where, hint) and exits 2 (3 for a failed gate); Ctrl-C exits 130. Heavy libraries are
imported inside the verbs, after the offline guard and the cache confinement are in place.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import click
import typer
from rich.markup import escape
from rich.table import Table

from engine import offline
from engine.console import err, make_progress, out, quiet_libraries
from engine.errors import GateFailed, StudioError
from engine.privacy import jobs as _privacy  # audit entries, retention, sealed tenants per verb

app = typer.Typer(name="studio", no_args_is_help=True, add_completion=False,
                  help="Expert Studio: raw logs to a proven fine-tuned model, fully offline.",
                  pretty_exceptions_enable=False)
models_app = typer.Typer(no_args_is_help=True, help="The base model store.")
runs_app = typer.Typer(no_args_is_help=True, help="Training runs.")
datasets_app = typer.Typer(no_args_is_help=True, help="Refined dataset versions.")
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")
app.add_typer(datasets_app, name="datasets")
# Private Space: audit log, purge with certificates, encryption at rest (engine/privacy/cli.py)
from engine.privacy.cli import audit_app, privacy_app, purge_cmd  # noqa: E402

app.add_typer(audit_app, name="audit")
app.add_typer(privacy_app, name="privacy")
app.command("purge")(purge_cmd)

_state: dict[str, Any] = {"workspace": None}

WorkspaceOpt = typer.Option(None, "--workspace", "-w", envvar="STUDIO_WORKSPACE",
                            help="Workspace directory [default: ./studio-workspace].")
TenantOpt = typer.Option("default", "--tenant", "-t", help="Tenant.")


@app.callback()
def _root(workspace: Optional[Path] = WorkspaceOpt) -> None:
    _state["workspace"] = workspace


def _ws() -> Any:
    from engine.workspace import Workspace

    return Workspace.resolve(_state["workspace"]).ensure()


def _registry(ws: Any) -> Any:
    from engine.registry import Registry

    return Registry(ws.registry_path)


def _load(path: Path) -> Any:
    from engine.config import load_config

    return load_config(path)


def _expect_kind(cfg: Any, kind: str, path: Path) -> None:
    if cfg.kind != kind:
        raise StudioError(f"this command needs a config of kind '{kind}', got '{cfg.kind}'",
                          where=str(path), hint=f"use `studio {_VERB_FOR_KIND[cfg.kind]}` for this file")


_VERB_FOR_KIND = {"pipeline": "run", "refine": "refine", "train": "train", "eval": "eval"}

# serving: `studio serve`, `studio keys`, `studio stats usage` (on engine.stats.stats_app),
# `studio bench serve` (engine/serve/cli.py)
from engine.serve.cli import bench_app, keys_app, serve_app  # noqa: E402

app.add_typer(serve_app, name="serve")
app.add_typer(keys_app, name="keys")
app.add_typer(bench_app, name="bench")
_VERB_FOR_KIND["serve"] = "serve"


# ------------------------------------------------------------------------------------ validate
@app.command()
def validate(files: list[Path] = typer.Argument(..., help="Config files to check.")) -> None:
    """Check config files without running anything (exit 2 on the first invalid one)."""
    failed = 0
    for f in files:
        try:
            cfg = _load(f)
            out.print(f"[green]ok[/]  {f}  (kind: {cfg.kind})")
        except StudioError as exc:
            failed += 1
            err.print(f"[red]invalid[/] {exc}")
    if failed:
        raise typer.Exit(2)


# -------------------------------------------------------------------------------------- models
@models_app.command("import")
def models_import(
    source: str = typer.Argument(..., help="HF model dir, .gguf file, or builtin:smollm2-135m-instruct"),
    name: str = typer.Option(..., "--name", "-n", help="Name in the model store."),
    overwrite: bool = typer.Option(False, help="Replace a model of the same name."),
) -> None:
    """Import a base model into the store (safetensors + sha256 manifest; pickle refused)."""
    from engine.models.store import import_model

    ws = _ws()
    _privacy.begin(ws, "models.import", None, ids={"model": name})
    with ws.job_tmp("default"), make_progress() as progress:
        row = import_model(ws, _registry(ws), source, name, overwrite=overwrite, progress=progress)
    _privacy.done(ids={"format": row["format"]}, hashes={"manifest": row["manifest_sha256"],
                                                         "source": row.get("source_sha256")})
    out.print(f"imported [bold]{row['name']}[/] ({row['format']}) manifest {row['manifest_sha256'][:12]}")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List imported base models."""
    rows = _registry(_ws()).list_models()
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("name", "format", "source", "manifest", "imported")
    for r in rows:
        table.add_row(r["name"], r["format"], r["source"], r["manifest_sha256"][:12], r["created_at"])
    out.print(table)


# ------------------------------------------------------------------------------------ datasets
@datasets_app.command("list")
def datasets_list(tenant: str = TenantOpt) -> None:
    """List dataset versions of a tenant."""
    table = Table("dataset", "version", "train", "val", "eval", "rejected", "created")
    for r in _registry(_ws()).list_datasets(tenant):
        c = r["counts"] or {}
        table.add_row(r["name"], f"v{r['version']}", *(str(c.get(k, "")) for k in ("train", "val", "eval")),
                      str(c.get("rejected", "")), r["created_at"])
    out.print(table)


# ---------------------------------------------------------------------------------------- stages
@app.command()
def refine(config: Path = typer.Argument(..., help="A config of kind 'refine'.")) -> None:
    """Raw logs -> a new dataset version (train/val/eval, rejects, lineage, card)."""
    from engine.data.pipeline import refine as do_refine

    cfg = _load(config)
    _expect_kind(cfg, "refine", config)
    ws = _ws()
    _privacy.begin(ws, "refine", cfg.tenant, cfg=cfg)
    with ws.job_tmp(cfg.tenant), make_progress() as progress:
        res = do_refine(cfg, ws, _registry(ws), progress)
    _privacy.done(ids={"dataset": res.name, "version": res.version, **{
        k: v for k, v in res.counts.items() if isinstance(v, int)}},
        hashes={"dataset": res.sha256}, result=res)
    out.print(f"dataset [bold]{res.name}@v{res.version}[/]: {_split_text(res.counts)}")
    out.print(f"card: {res.path / 'card.html'} (data: {res.path / 'card.json'})")


def _split_text(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "eval")) + \
        f"; rejected {counts.get('rejected', 0)} of {counts.get('input_records', 0)} raw records"


@app.command()
def train(
    config: Path = typer.Argument(..., help="A config of kind 'train'."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve config, data and template; do not train."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID",
                                         help="Continue this unfinished run from its last checkpoint."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1,
                                        help="Train with N processes on this machine (torchrun)."),
    force: bool = typer.Option(False, "--force",
                               help="Start even when the preflight estimate exceeds the device's memory."),
) -> None:
    """Train a run on a dataset version (--resume continues one, --nproc N runs N processes)."""
    cfg = _load(config)
    _expect_kind(cfg, "train", config)
    ws = _ws()
    registry = _registry(ws)
    _privacy.begin(ws, "train.dry_run" if dry_run else "train", cfg.tenant, cfg=cfg)
    with ws.job_tmp(cfg.tenant):
        if dry_run:
            from engine.train.preview import preview

            report = preview(cfg, registry)
            print(json.dumps(report, indent=2))
            if report.get("gate", "passed") != "passed":
                raise StudioError(f"template/mask gate {report['gate']}", where=str(config))
            _privacy.done()
            return
        from engine.train.launch import train_run

        with make_progress() as progress:
            res = train_run(cfg, ws, registry, progress=progress, resume=resume, nproc=nproc,
                            force=force)
    if res is None:  # one worker of several: the launching command reports
        _privacy.done(ids={"worker": True})
        return
    _privacy.done(ids={"run_id": res.run_id, "steps": res.metrics.get("steps")},
                  hashes={"manifest": _privacy.file_sha256(res.path / "manifest.json")},
                  registry=registry)
    out.print(f"run [bold]{res.run_id}[/] finished: {res.metrics['steps']} steps, "
              f"loss {res.metrics['final_loss']}, {res.metrics['train_seconds']} s")


@app.command("eval")
def eval_cmd(config: Path = typer.Argument(..., help="A config of kind 'eval'."),
             no_cache: bool = typer.Option(False, "--no-cache",
                                           help="Generate every output again (eval.cache: false).")
             ) -> None:
    """Generate and grade each listed model on a dataset split."""
    from engine.data.pipeline import resolve_dataset
    from engine.eval.suite import run_eval

    cfg = _load(config)
    _expect_kind(cfg, "eval", config)
    spec = cfg.eval.model_copy(update={"cache": False}) if no_cache else cfg.eval
    ws = _ws()
    registry = _registry(ws)
    base_dir = config.resolve().parent
    _privacy.begin(ws, "eval", cfg.tenant, ids={"models": list(cfg.eval.models)}, cfg=cfg)
    if spec.suite is not None:  # one eval per (model, task); relative task paths: config's folder
        from engine.eval.tasks import load_suite, print_result, run_suite

        tasks = load_suite(spec, base_dir, registry, cfg.tenant)  # every task checked first
        eval_ids: list[str] = []
        with ws.job_tmp(cfg.tenant), make_progress() as progress:
            for ref in cfg.eval.models:
                results = run_suite(spec, ws, registry, tenant=cfg.tenant, model_ref=ref,
                                    cfg_dir=base_dir, tasks=tasks, progress=progress,
                                    on_task=print_result)
                eval_ids.extend(r.eval_id for r in results)
        _privacy.done(ids={"eval_ids": eval_ids})
        return
    dataset = resolve_dataset(registry, cfg.tenant, cfg.eval.dataset)
    ids: list[str] = []
    proofs: list[str | None] = []
    with ws.job_tmp(cfg.tenant), make_progress() as progress:
        for ref in cfg.eval.models:
            res = run_eval(spec, ws, registry, tenant=cfg.tenant, model_ref=ref,
                           dataset=dataset, progress=progress, base_dir=base_dir)
            out.print(f"eval [bold]{res.eval_id}[/]  {ref} scored {res.score:.3f} on {res.n} items")
            proofs.append(res.proof_sha256)
            ids.append(res.eval_id)
    _privacy.done(ids={"eval_ids": ids, "dataset": f"{dataset['name']}@v{dataset['version']}"},
                  hashes={"dataset": dataset["sha256"], "proofs": [p for p in proofs if p]})


@app.command()
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
) -> None:
    """Paired comparison of two evals: buckets, paired tests, HTML report; gate exit code 3."""
    from engine.eval.diff import diff_evals

    if require not in ("better", "not_worse", "none"):
        raise StudioError(f"--require must be better, not_worse or none, got {require!r}")
    ws = _ws()
    registry = _registry(ws)
    _privacy.begin(ws, "diff", tenant, ids={"base_eval": base_eval, "tuned_eval": tuned_eval,
                                            "require": require})
    rows = []
    for eid in (base_eval, tuned_eval):
        row = registry.get_eval(eid)
        if row is None or row["tenant"] != tenant:
            raise StudioError(f"unknown eval {eid!r} for tenant {tenant!r}",
                              hint="eval ids are printed by `studio eval` and `studio run`")
        rows.append(row)
    out_dir = ws.eval_dir(tenant, f"diff-{base_eval}-vs-{tuned_eval}")
    res = diff_evals(Path(rows[0]["path"]), Path(rows[1]["path"]), out_dir, alpha=alpha,
                     require=require, margin=margin, per_slice=per_slice, slice_key=slice_key,
                     base_label=rows[0]["model_ref"],
                     tuned_label=rows[1]["model_ref"])
    _print_diff(res.stats)
    out.print(f"report: {res.report_path}")
    _privacy.done(ids={"verdict": res.verdict, "gate_passed": res.gate_passed},
                  hashes={"report": _privacy.file_sha256(res.report_path)})
    if not res.gate_passed:
        failed = res.stats["gate"]["failed_slices"]
        extra = f"; not non-inferior on slices: {', '.join(failed)}" if failed else ""
        raise GateFailed(f"gate '{require}' failed: verdict {res.verdict}{extra}")


def _print_diff(stats: dict[str, Any]) -> None:
    o = stats["overall"]
    out.print(f"base {o['base_score']:.3f}  tuned {o['tuned_score']:.3f}  "
              f"fixed {o['fixed']}  broke {o['broke']}  p={o['p_value']:.3g}  "
              f"verdict [bold]{stats['verdict']}[/]")


@app.command()
def export(
    run_id: str = typer.Argument(..., help="A finished run."),
    merge: bool = typer.Option(False, "--merge", help="Merge the adapter into the base weights."),
    tenant: str = TenantOpt,
) -> None:
    """Export a run's adapter, or with --merge one merged safetensors model (with lineage)."""
    from engine.train.export import export_run

    ws = _ws()
    _privacy.begin(ws, "export", tenant, ids={"run_id": run_id, "merge": merge})
    with ws.job_tmp(tenant):
        path = export_run(ws, _registry(ws), run_id, tenant, merge=merge)
    _privacy.done(ids={"path": str(Path(path).relative_to(ws.root)) if Path(path).is_relative_to(
        ws.root) else Path(path).name})
    out.print(f"exported {'merged model' if merge else 'adapter'} of {run_id} to {path}")


# ------------------------------------------------------------------------------------ pipeline
@app.command()
def run(
    config: Path = typer.Argument(..., help="A config of kind 'pipeline' (e.g. configs/quickstart.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="End with a one-line JSON summary on stdout."),
) -> None:
    """Import -> refine -> train -> eval base and tuned -> diff, in one go."""
    from engine.flow import run_pipeline

    t0 = time.monotonic()
    cfg = _load(config)
    _expect_kind(cfg, "pipeline", config)
    ws = _ws()
    _privacy.begin(ws, "run", cfg.tenant, cfg=cfg)
    with ws.job_tmp(cfg.tenant), make_progress() as progress:
        summary = run_pipeline(cfg, ws, _registry(ws), progress=progress, started=t0)
    _privacy.done(ids={k: summary.get(k) for k in ("run_id", "dataset", "verdict", "gate_passed")},
                  registry=_registry(ws))
    out_console = err if as_json else out
    out_console.print(
        f"[bold]time to first model {summary['ttfm_seconds']:.0f} s[/]  run {summary['run_id']}\n"
        f"base {summary['base_score']:.3f} -> tuned {summary['tuned_score']:.3f}  "
        f"p={summary['p_value']:.3g}  verdict [bold]{summary['verdict']}[/]\nreport: {summary['report']}")
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
        raise GateFailed(f"gate '{cfg.gate.require}' failed: verdict {summary['verdict']}{extra}")


# ---------------------------------------------------------------------------------------- runs
@runs_app.command("list")
def runs_list(tenant: str = TenantOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """List training runs of a tenant."""
    rows = _registry(_ws()).list_runs(tenant)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("run", "status", "method", "base model", "parent run", "dataset", "final loss",
                  "created")
    for r in rows:
        loss = (r["metrics"] or {}).get("final_loss")
        table.add_row(r["run_id"], r["status"], r["method"], r["base_model"], r.get("parent_run") or "",
                      r["dataset"],
                      "" if loss is None else f"{loss:.4f}", r["created_at"])
    out.print(table)


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(...)) -> None:
    """Show a run: registry row and its manifest (JSON)."""
    row = _registry(_ws()).get_run(run_id)
    if row is None:
        raise StudioError(f"unknown run {run_id!r}", hint="see `studio runs list`")
    manifest_path = Path(row["path"]) / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    if manifest:
        manifest.pop("lockfile", None)
    print(json.dumps({"run": row, "manifest": manifest}, indent=2, sort_keys=True))


# ------------------------------------------------- reproduce, stats, ui (engine/repro, stats, web)
from engine.repro.cli import reproduce_cmd  # noqa: E402
from engine.stats import stats_app  # noqa: E402  (serving adds `stats_app.command("usage")`)
from engine.web.cli import ui_cmd  # noqa: E402

app.command("reproduce")(reproduce_cmd)
app.command("ui")(ui_cmd)
app.add_typer(stats_app, name="stats")


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    """Entry point: offline guard first, then the CLI, then user errors as one message."""
    offline.enforce()
    quiet_libraries()
    try:
        with _privacy.session():  # every begun job is audited (and re-sealed) however it ends
            rc = app(args=argv, prog_name="studio", standalone_mode=False)
    except StudioError as exc:
        err.print(f"[red bold]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        err.print("[yellow]interrupted[/] — nothing half-written was kept")
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    if rc == 130:  # click turns Ctrl-C into a return code when not in standalone mode
        err.print("[yellow]interrupted[/] — nothing half-written was kept")
    if isinstance(rc, int) and rc:  # typer.Exit(code) is returned, not raised, here
        sys.exit(rc)


if __name__ == "__main__":
    main()
