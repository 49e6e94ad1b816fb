"""Running the gateway: backend construction from a serve config, uvicorn (foreground or in a thread), logging.

Logging is deliberately thin: uvicorn's access log writes `"METHOD /path HTTP/1.1" status` and
nothing else (no client address, headers or bodies); our own messages carry counts and ids only.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import ServeSpec
from engine.errors import StudioError
from engine.generation.serving import Backend
from engine.generation.vllm_server import from_serve_spec
from engine.models.store import get_model_dir
from engine.serve.backends.hf import HFBackend
from engine.serve.gateway import Gateway, create_app
from engine.registry import Registry
from engine.workspace import Workspace

LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "access": {"()": "uvicorn.logging.AccessFormatter",
                   "fmt": '%(asctime)s access: "%(request_line)s" %(status_code)s',
                   "use_colors": False},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        "studio.serve": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def make_backend(spec: ServeSpec, model_dir: Path, scratch: Path | None = None) -> Backend:
    """The backend a serve config asks for, serving `model_dir` under the base model's store name."""
    if spec.backend == "transformers":
        b = spec.batching
        return HFBackend(model_dir, spec.base_model, dtype=spec.dtype, max_batch_size=b.max_batch_size,
                         batch_wait_ms=b.batch_wait_ms, max_queue=b.max_queue, threads=spec.threads)
    return from_serve_spec(spec, model_dir, scratch)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build(spec: ServeSpec, ws: Workspace, registry: Registry, scratch: Path | None = None) -> Any:
    """(gateway, app) for a serve config in a workspace; nothing is loaded until the app starts."""
    backend = make_backend(spec, get_model_dir(ws, registry, spec.base_model), scratch)
    gateway = Gateway(spec, backend, ws.registry_path)
    return gateway, create_app(gateway)


def uvicorn_config(app: Any, host: str, port: int, access_log: bool = True) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_config=LOG_CONFIG, access_log=access_log,
                          lifespan="on", server_header=False, date_header=False,
                          timeout_graceful_shutdown=10, ws="none")


@dataclass
class RunningServer:
    """A gateway served by uvicorn in a background thread (tests, benchmarks)."""

    server: Any
    thread: threading.Thread
    gateway: Any
    url: str

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(spec: ServeSpec, ws: Workspace, registry: Registry, *, access_log: bool = False,
                    timeout: float = 300.0) -> RunningServer:
    """Start the gateway on spec.host (port 0: a free one) in a thread; returns when it is ready."""
    gateway, app = build(spec, ws, registry)
    return run_in_thread(gateway, app, spec.host, spec.port, access_log=access_log, timeout=timeout)


def run_in_thread(gateway: Any, app: Any, host: str = "127.0.0.1", port: int = 0, *,
                  access_log: bool = False, timeout: float = 300.0) -> RunningServer:
    """Serve an app built by `create_app` with uvicorn in a daemon thread; returns once it listens."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn_config(app, host, port, access_log))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)

    thread = threading.Thread(target=run, name="studio-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if errors or not thread.is_alive():
            raise RuntimeError("the gateway failed to start") from (errors[0] if errors else None)
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("the gateway did not start in time")
        time.sleep(0.05)
    return RunningServer(server, thread, gateway, f"http://{host}:{port}")


def serve_forever(spec: ServeSpec, ws: Workspace, registry: Registry, scratch: Path | None = None,
                  on_ready: Any = None, on_status: Any = None, status_every_s: float = 60.0) -> None:
    """Serve in the foreground until Ctrl-C/SIGTERM; the backend (and any process it started) stops with it."""
    import uvicorn

    sock = listen(spec.host, spec.port)  # before any weights load: a busy port fails fast
    gateway, app = build(spec, ws, registry, scratch)
    gateway.on_status, gateway.status_every_s = on_status, status_every_s
    server = uvicorn.Server(uvicorn_config(app, spec.host, sock.getsockname()[1]))
    if on_ready is not None:
        original = server.startup

        async def startup(sockets: Any = None) -> None:
            await original(sockets=sockets)
            if server.started:
                bound = server.servers[0].sockets[0].getsockname() if server.servers else None
                gateway.bound = (spec.host, bound[1]) if bound else None
                on_ready(gateway, spec)

        server.startup = startup  # type: ignore[method-assign]
    with sock:
        server.run(sockets=[sock])
    if not server.started:
        raise StudioError(f"the gateway could not start on {spec.host}:{spec.port}",
                          hint="see the log lines above")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one), or a StudioError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise StudioError(f"cannot listen on {host}:{port} ({exc.strerror or exc.__class__.__name__})",
                          where="serve.host/serve.port",
                          hint="is another server using the port? choose another serve.port or --port") from None
    sock.set_inheritable(True)
    return sock
