"""`studio validate FILE…`: check configs without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from engine.cli.context import JsonOpt, emit, load
from engine.console import err, out
from engine.errors import StudioError


def validate(files: list[Path] = typer.Argument(..., help="Config files to check."),
             as_json: bool = JsonOpt) -> None:
    """Check config files without running anything (exit 2 when one is invalid)."""
    results = []
    for f in files:
        try:
            cfg = load(f)
            results.append({"file": str(f), "ok": True, "kind": cfg.kind})
            if not as_json:
                out.print(f"[green]ok[/]  {f}  (kind: {cfg.kind})")
        except StudioError as exc:
            results.append({"file": str(f), "ok": False, "error": str(exc)})
            if not as_json:
                err.print(f"[red]invalid[/] {exc}")
    emit(as_json, results)
    if not all(r["ok"] for r in results):
        raise typer.Exit(2)
