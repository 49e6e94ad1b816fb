"""What every verb module shares: the global --workspace, the workspace and registry, config loading,
the common options, and how a result is printed (human lines/tables, or one JSON document).

Results go to stdout, human messages and progress to stderr (engine/console.py). With `--json` a
verb prints exactly one JSON document on stdout (a list or an object) and nothing else there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from engine.console import out
from engine.errors import StudioError
from engine.registry import Registry
from engine.workspace import Workspace

_state: dict[str, Any] = {"workspace": None}

WorkspaceOpt = typer.Option(None, "--workspace", "-w", envvar="STUDIO_WORKSPACE",
                            help="Workspace directory (default: ./studio-workspace).")
TenantOpt = typer.Option("default", "--tenant", "-t", help="Tenant.")
OptionalTenantOpt = typer.Option(None, "--tenant", "-t", help="Only this tenant.")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout.")

# the verb that runs a config of each kind (named in "wrong kind" errors)
VERB_FOR_KIND = {"pipeline": "run", "refine": "refine", "train": "train", "eval": "eval",
                 "serve": "serve"}


def set_workspace(workspace: Optional[Path]) -> None:
    _state["workspace"] = workspace


def workspace_option() -> Optional[Path]:
    """The global --workspace value (None: the default)."""
    return _state["workspace"]


def ws() -> Workspace:
    """The workspace of this invocation, created if needed."""
    return Workspace.resolve(_state["workspace"]).ensure()


def registry(workspace: Workspace) -> Registry:
    return Registry(workspace.registry_path)


def load(path: Path, kind: str | None = None) -> Any:
    """A validated config (StudioError naming file, line and field); of `kind` when given."""
    from engine.config import load_config  # lazy: CLI start-up time (pydantic models)

    cfg = load_config(path)
    if kind is not None and cfg.kind != kind:
        raise StudioError(f"this command needs a config of kind '{kind}', got '{cfg.kind}'",
                          where=str(path), hint=f"use `studio {VERB_FOR_KIND[cfg.kind]}` for this file")
    return cfg


def emit(as_json: bool, data: Any, human: Callable[[], None] | str | list[str] | None = None) -> None:
    """A verb's result: `data` as one JSON document with --json; otherwise `human` (lines to print
    or a function that prints)."""
    if as_json:
        print(json.dumps(data, sort_keys=True, default=str))
        return
    if callable(human):
        human()
    elif isinstance(human, str):
        out.print(human)
    elif human:
        for line in human:
            out.print(line)


def table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> Table:
    """A rich table with every cell as text."""
    t = Table(*columns, title=title)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    return t
