"""The `studio` command line: assembles the Typer app from one module per verb group, and `main`.

Each verb module parses its arguments, calls one library function and prints the result (human
text and tables on stdout, or one JSON document with `--json`; progress and messages on stderr).
A StudioError prints one message (what, where, hint) and exits 2 (3 for a failed gate), and so
does a full disk (ENOSPC/EDQUOT, engine.errors.DiskFull); Ctrl-C exits 130, SIGTERM 143. Heavy
libraries are imported inside the verbs, after the offline guard and the cache confinement are in
place. Libraries never import from engine.cli.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click
import typer
from rich.markup import escape

from engine import __version__, gpu_libs, offline
from engine.cli import (evaluation, models, pipeline, privacy, refine, repro, serve, stats, train,
                        validate, web)
from engine.cli.context import WorkspaceOpt, set_workspace
from engine.console import err, quiet_libraries
from engine.errors import DiskFull, StudioError, disk_full
from engine.privacy import jobs

app = typer.Typer(name="studio", no_args_is_help=True, add_completion=False,
                  help="Expert Studio: raw logs to a proven fine-tuned model, fully offline.",
                  pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        print(f"studio {__version__}")
        raise typer.Exit()


@app.callback()
def _root(workspace: Optional[Path] = WorkspaceOpt,
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    set_workspace(workspace)


app.add_typer(models.app, name="models")
app.add_typer(train.runs_app, name="runs")
app.add_typer(refine.datasets_app, name="datasets")
app.add_typer(privacy.audit_app, name="audit")
app.add_typer(privacy.privacy_app, name="privacy")
app.command("purge")(privacy.purge_cmd)
app.add_typer(serve.serve_app, name="serve")
app.add_typer(serve.keys_app, name="keys")
app.add_typer(serve.bench_app, name="bench")
app.command("validate")(validate.validate)
app.command("refine")(refine.refine)
app.command("train")(train.train)
app.command("eval")(evaluation.eval_cmd)
app.command("diff")(evaluation.diff)
app.command("export")(train.export)
app.command("run")(pipeline.run)
app.command("reproduce")(repro.reproduce_cmd)
app.command("ui")(web.ui_cmd)
app.add_typer(stats.app, name="stats")


def main(argv: list[str] | None = None) -> None:
    """Entry point: offline guard and hidden GPU-only libraries first, then the CLI, then user
    errors as one message."""
    offline.enforce()
    gpu_libs.hide()  # bitsandbytes only where a config asks for it (QLoRA): engine/gpu_libs.py
    quiet_libraries()
    try:
        with jobs.session():  # every begun job is audited (and re-sealed) however it ends
            rc = app(args=argv, prog_name="studio", standalone_mode=False)
    except StudioError as exc:
        err.print(f"[red bold]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        terminated = jobs.terminated()
        err.print(f"[yellow]{'terminated (SIGTERM)' if terminated else 'interrupted'}[/] — "
                  "nothing half-written was kept")
        sys.exit(143 if terminated else 130)
    except OSError as exc:
        if not disk_full(exc):
            raise
        full = DiskFull.from_os_error(exc)
        err.print(f"[red bold]error:[/] {escape(str(full))}")
        sys.exit(full.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    if rc == 130:  # click turns Ctrl-C into a return code when not in standalone mode
        err.print(f"[yellow]{'terminated (SIGTERM)' if jobs.terminated() else 'interrupted'}[/] — "
                  "nothing half-written was kept")
        rc = 143 if jobs.terminated() else rc
    if isinstance(rc, int) and rc:  # typer.Exit(code) is returned, not raised, here
        sys.exit(rc)
