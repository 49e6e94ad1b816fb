"""`studio ui`: serve the read-only dashboard (engine/web/app.py) with uvicorn on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine.cli.context import workspace_option
from engine.console import err
from engine.workspace import Workspace

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ui_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="Port."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", envvar="STUDIO_WORKSPACE",
                                             help="Workspace directory [default: the global --workspace]."),
) -> None:
    """Serve the Studio dashboard (datasets, runs, evals, models, audit log); log in with an API key."""
    import uvicorn

    # lazy: CLI start-up time (FastAPI)
    from engine.web.app import create_app

    ws = Workspace.resolve(workspace or workspace_option()).ensure()
    if host not in LOOPBACK:
        err.print(f"[yellow]warning:[/] listening on {host}: without TLS in front, API keys and "
                  "session cookies cross the network in clear text")
    err.print(f"Studio dashboard for {ws.root} on http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(create_app(ws), host=host, port=port, access_log=False, log_level="warning",
                server_header=False)
