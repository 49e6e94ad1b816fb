"""Privacy hooks around one CLI verb: audit entries at success/failure, retention after refine and
train, and — for tenants with `encryption: true` — a decrypted tmpfs view of the tenant for the
job, sealed back and wiped when the job ends (success, failure, Ctrl-C or SIGTERM), one job per
encrypted tenant at a time.

SIGTERM (docker stop, systemd, Slurm's scancel) is handled like Ctrl-C: `session()` turns it into
`Terminated` (a KeyboardInterrupt) in the main thread, so every `finally` runs — the job is
audited as interrupted, its view sealed and wiped, its scratch directory removed — and the
command exits 143. A second SIGTERM during that clean-up is ignored; SIGKILL cannot be handled:
what it leaves is repaired by the next job (view.recover, Workspace.sweep_scratch).

The CLI (engine/cli/) calls `begin(...)` once a verb knows its workspace and tenant, `done(...)`
on success, and wraps the whole command in `session()`.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from engine.console import err
from engine.hashing import sha256_file
from engine.privacy import audit
from engine.registry import Registry
from engine.workspace import Workspace

if TYPE_CHECKING:
    from engine.config import StudioConfig


@dataclass
class _Job:
    ws: Workspace
    action: str
    tenant: str | None
    ids: dict[str, Any] = field(default_factory=dict)
    cfg: StudioConfig | None = None
    finished: bool = False
    lock_fd: int | None = None
    key: bytes | None = None
    view: Any = None


_current: list[_Job] = []


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM; raised in the main thread so clean-up runs as on Ctrl-C."""


_signals_seen: list[str] = []  # "SIGINT" / "SIGTERM", once this process got one in session()


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up must not be cut short
    _signals_seen.append("SIGTERM")
    raise Terminated()


def _on_sigint(signum: int, frame: Any) -> None:
    _signals_seen.append("SIGINT")  # click may turn the KeyboardInterrupt into a return code
    signal.default_int_handler(signum, frame)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them to the handlers that were in
    place: for a step a signal must not cut half-way, such as starting worker processes (cut inside
    `Pool()`, the half-started workers are orphaned and die with a traceback once this process has
    exited). Main thread only; elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    saved = {s: signal.signal(s, lambda signum, frame: got.append(signum))
             for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(got):
            signal.raise_signal(s)  # the restored handler runs (and raises) here


def terminated() -> bool:
    """Whether this process received SIGTERM inside `session()`."""
    return "SIGTERM" in _signals_seen


def interruption(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind `exc` (click wraps it in Abort), if any."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _encryption_key(ws: Workspace, tenant: str | None) -> bytes | None:
    if tenant is None:
        return None
    # lazy: CLI start-up time (every verb imports this module; the policy is a pydantic model,
    # and the keys are needed only for encrypted tenants)
    from engine.privacy.keys import tenant_key
    from engine.privacy.policy import load_policy

    if not load_policy(ws).encrypted(tenant):
        return None
    return tenant_key(ws, tenant)


def file_sha256(path: Any) -> str | None:
    return sha256_file(path) if path is not None and Path(path).is_file() else None


def _distributed() -> tuple[bool, bool]:
    """(silent, audit_only) for this process: a rank of `studio train --nproc` stays silent (the
    launching command audits and holds the view); under the user's own launcher rank 0 audits but
    opens no view (the other ranks could not wait for it) and the other ranks stay silent."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return False, False
    if os.environ.get("STUDIO_LAUNCHER_PID", "").isdigit():
        return True, False
    return os.environ.get("RANK", "0") != "0", True


def begin(ws: Workspace, action: str, tenant: str | None = None, *, ids: dict[str, Any] | None = None,
          cfg: StudioConfig | None = None, open_data: bool = True) -> None:
    """Start of a verb's work: remember what to audit; open an encrypted tenant's data in a
    tmpfs view (open_data=False: only take the tenant's lock, e.g. to purge sealed files)."""
    silent, audit_only = _distributed()
    if silent:
        return
    if cfg is not None:
        # lazy: CLI start-up time (only verbs with a config check its paths)
        from engine.privacy.isolation import check_config_paths

        check_config_paths(ws, cfg)
    job = _Job(ws, action, tenant, dict(ids or {}), cfg)
    key = None if audit_only else _encryption_key(ws, tenant)
    if key is not None and tenant is not None:
        # lazy: CLI start-up time (only encrypted tenants open a view)
        from engine.privacy import view

        tenants = ws.tenant_dir(tenant, create=False).parent
        tenants.mkdir(parents=True, exist_ok=True, mode=0o700)
        job.lock_fd = os.open(tenants / f".lock-{tenant}", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(job.lock_fd, fcntl.LOCK_EX)  # one job per encrypted tenant
        job.key = key
        _current.append(job)  # from here on, session() closes it whatever happens
        if open_data:
            job.view = view.open_view(ws, tenant, key)
            err.print(f"encrypted tenant {tenant}: opened {len(job.view.snapshot)} file(s) in "
                      f"{job.view.view.parent} for this job")
        else:
            view.recover(ws, tenant, key)
        return
    _current.append(job)


def done(*, ids: dict[str, Any] | None = None, hashes: dict[str, Any] | None = None,
         result: Any = None, registry: Registry | None = None) -> None:
    """The verb succeeded: audit it, then apply the retention policy (refine/train)."""
    if not _current:
        return
    job = _current[-1]
    job.finished = True
    audit.record(job.ws, job.action, tenant=job.tenant, ids={**job.ids, **(ids or {})},
                 hashes=hashes)
    # lazy: CLI start-up time (the retention policy is a pydantic model)
    from engine.privacy import retention

    certs: list[Path] = []
    if job.action == "refine" and result is not None and job.cfg is not None:
        certs = retention.after_refine(job.ws, job.cfg, result)
    if job.action == "run" and job.cfg is not None and getattr(job.cfg, "refine", None):
        name, _, version = str((ids or {}).get("dataset") or "").partition("@v")
        if version.isdigit():  # the pipeline refined this version: its uploads may go now
            certs = retention.after_refine(job.ws, job.cfg,
                                           SimpleNamespace(name=name, version=int(version)))
    if job.action in ("train", "run") and registry is not None and job.tenant is not None:
        run_id = (ids or {}).get("run_id")
        if run_id:
            certs += retention.after_train(job.ws, job.tenant, str(run_id), registry)
    for cert in certs:
        err.print(f"retention: deleted per policy, certificate {cert.name}")


def _end(job: _Job, exc: BaseException | None) -> None:
    try:
        if not job.finished:
            stop = interruption(exc)
            if stop is None and _signals_seen:  # the verb returned 130 after the signal
                stop = Terminated() if terminated() else KeyboardInterrupt()
            kind = "interrupted" if stop is not None else "failed"
            error = type(stop or exc).__name__ if (stop or exc) else "exit"
            audit.record(job.ws, f"{job.action}.{kind}", tenant=job.tenant,
                         ids={**job.ids, "error": error})
    finally:
        try:
            if job.view is not None and job.key is not None:
                # lazy: CLI start-up time (only encrypted tenants open a view)
                from engine.privacy.view import close_view

                res = close_view(job.view, job.key)
                err.print(f"encrypted tenant {job.tenant}: sealed {res['sealed']} new or changed "
                          f"file(s), removed {res['removed']}; plaintext view wiped")
        finally:
            if job.lock_fd is not None:
                fcntl.flock(job.lock_fd, fcntl.LOCK_UN)
                os.close(job.lock_fd)


@contextmanager
def session() -> Iterator[None]:
    """Wrap one CLI invocation: every begun job is closed (audited, re-sealed) however it ends;
    SIGTERM raises `Terminated` inside it (main thread only)."""
    start = len(_current)
    exc: BaseException | None = None
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    previous_int = signal.getsignal(signal.SIGINT) if main else None
    if previous_int is signal.default_int_handler:  # not where SIGINT is ignored (background)
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    except BaseException as e:  # re-raised below; recorded as failed/interrupted first
        exc = e
        raise
    finally:
        try:
            if main:  # no SIGTERM while the jobs are closed: they are sealed and audited first
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            while len(_current) > start:
                _end(_current.pop(), exc)
        finally:
            if main:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
                if previous_int is signal.default_int_handler:
                    signal.signal(signal.SIGINT, previous_int)
