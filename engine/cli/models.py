"""`studio models import|list`: the base model store."""

from __future__ import annotations

import typer

from engine.cli.context import JsonOpt, emit, registry, table, ws
from engine.console import make_progress, out
from engine.privacy import jobs

app = typer.Typer(no_args_is_help=True, help="The base model store.")


@app.command("import")
def models_import(
    source: str = typer.Argument(..., help="HF model dir, .gguf file, or builtin:smollm2-135m-instruct"),
    name: str = typer.Option(..., "--name", "-n", help="Name in the model store."),
    overwrite: bool = typer.Option(False, help="Replace a model of the same name."),
    as_json: bool = JsonOpt,
) -> None:
    """Import a base model into the store (safetensors + sha256 manifest; pickle refused)."""
    # lazy: CLI start-up time
    from engine.models.store import import_model

    workspace = ws()
    jobs.begin(workspace, "models.import", None, ids={"model": name})
    with workspace.job_tmp("default"), make_progress() as progress:
        row = import_model(workspace, registry(workspace), source, name, overwrite=overwrite,
                           progress=progress)
    jobs.done(ids={"format": row["format"]}, hashes={"manifest": row["manifest_sha256"],
                                                     "source": row.get("source_sha256")})
    emit(as_json, row, f"imported [bold]{row['name']}[/] ({row['format']}) manifest "
                       f"{row['manifest_sha256'][:12]}")


@app.command("list")
def models_list(as_json: bool = JsonOpt) -> None:
    """List imported base models."""
    rows = registry(ws()).list_models()
    emit(as_json, rows, lambda: out.print(table(
        ["name", "format", "source", "manifest", "imported"],
        [[r["name"], r["format"], r["source"], r["manifest_sha256"][:12], r["created_at"]]
         for r in rows])))
