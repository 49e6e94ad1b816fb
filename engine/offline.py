"""Offline by construction: offline/no-telemetry environment and the network egress guard.

Every entry point calls `enforce()` first, before any ML library is imported, so that the
libraries read the offline variables at import time. After `enforce()`, any attempt to open a
connection (or resolve a name) outside the loopback range raises `EgressBlocked`.
`confine_caches(dir)` points every library cache and temp directory into one directory we own.
"""

from __future__ import annotations

import _socket
import ipaddress
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import EgressBlocked, LookupBlocked

OFFLINE_ENV: dict[str, str] = {
    # Hugging Face hub / transformers / datasets / evaluate: never reach the hub.
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # Generic and per-tool telemetry switches.
    "DO_NOT_TRACK": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "WANDB_DISABLED": "true",
    "WANDB_MODE": "disabled",
    "WANDB_SILENT": "true",
    "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    "COMET_MODE": "disabled",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PIP_NO_INPUT": "1",
}

# Variables that make libraries write caches; `confine_caches` points all of them at one place.
CACHE_ENV_SUBDIRS: dict[str, str] = {
    "HF_HOME": "hf",
    "HF_DATASETS_CACHE": "hf/datasets",
    "HF_HUB_CACHE": "hf/hub",
    "HF_XET_CACHE": "hf/xet",
    "TRANSFORMERS_CACHE": "hf/transformers",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_HOME": "xdg-config",
    "TORCH_HOME": "torch",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton",
    "CUDA_CACHE_PATH": "cuda",
    "VLLM_CACHE_ROOT": "vllm",
    "VLLM_CONFIG_ROOT": "vllm-config",
    "MPLCONFIGDIR": "matplotlib",
    "NUMBA_CACHE_DIR": "numba",
    "TMPDIR": "tmp",
}

_guard_installed = False
# The user's own values of the variables `confine_caches` replaces (captured at its first call),
# so that per-user settings (e.g. the config dir holding keys) still resolve inside a job.
_USER_ENV: dict[str, str | None] = {}
_ALLOWED_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


def is_loopback(host: Any) -> bool:
    """True for loopback IPs, 'localhost' and unix-socket paths; False for anything else."""
    if isinstance(host, (bytes, bytearray)):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower()
    if name in _ALLOWED_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def log_attempt(kind: str, address: str) -> None:
    """Strict mode: with STUDIO_EGRESS_LOG=path, append every blocked attempt as one JSON line."""
    path = os.environ.get("STUDIO_EGRESS_LOG")
    if not path:
        return
    import json
    import time

    line = json.dumps({"ts": time.time(), "pid": os.getpid(), "kind": kind, "address": address})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)
    except OSError:
        pass


def _check_address(family: int, address: Any) -> None:
    if family == getattr(socket, "AF_UNIX", None):
        return
    if isinstance(address, tuple) and address:
        host, port = address[0], address[1] if len(address) > 1 else None
        if not is_loopback(host):
            log_attempt("connect", f"{host}:{port}")
            raise EgressBlocked(f"{host}:{port}")
    elif isinstance(address, (str, bytes)):  # unix path passed to a non-unix socket: let OS decide
        return


# the resolver calls besides getaddrinfo, each a DNS query for a non-loopback name or address
LOOKUPS = ("gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")


def install_egress_guard() -> None:
    """Patch the socket layer so that only loopback connections and lookups are possible."""
    global _guard_installed
    if _guard_installed:
        return
    sock_cls = socket.socket
    orig_connect = sock_cls.connect
    orig_connect_ex = sock_cls.connect_ex
    orig_sendto = sock_cls.sendto
    orig_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        _check_address(self.family, address)
        return orig_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        _check_address(self.family, address)
        return orig_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> Any:
        _check_address(self.family, args[-1])
        return orig_sendto(self, data, *args)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not is_loopback(host):
            log_attempt("getaddrinfo", str(host))
            raise LookupBlocked(f"{host} (name lookup)")
        return orig_getaddrinfo(host, *args, **kwargs)

    orig_sendmsg = getattr(sock_cls, "sendmsg", None)

    def sendmsg(self: socket.socket, buffers: Any, *args: Any) -> Any:
        if len(args) >= 3 and args[2] is not None:  # (ancdata, flags, address)
            _check_address(self.family, args[2])
        return orig_sendmsg(self, buffers, *args)  # type: ignore[misc]

    def lookup(kind: str, original: Any) -> Any:
        """A name or address lookup (gethostbyname, gethostbyaddr, …): loopback only — a DNS
        query is itself a way out (the name carries the data)."""

        def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
            target = host[0] if isinstance(host, tuple) and host else host
            if not is_loopback(target):
                log_attempt(kind, str(target))
                raise LookupBlocked(f"{target} (name lookup)")
            return original(host, *args, **kwargs)

        return guarded

    sock_cls.connect = connect  # type: ignore[method-assign]
    sock_cls.connect_ex = connect_ex  # type: ignore[method-assign]
    sock_cls.sendto = sendto  # type: ignore[method-assign,assignment]
    if orig_sendmsg is not None:
        sock_cls.sendmsg = sendmsg  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    for name in LOOKUPS:
        for module in (socket, _socket):  # also `from _socket import gethostbyname`
            if hasattr(module, name):
                setattr(module, name, lookup(name, getattr(module, name)))
    _guard_installed = True


def guard_installed() -> bool:
    return _guard_installed


CHILD_GUARD_DIR = Path(__file__).resolve().parent / "privacy" / "childguard"


def enforce() -> None:
    """Set the offline/no-telemetry variables (inherited by child processes) and install the guard.

    Child Python processes inherit the guard too: STUDIO_EGRESS_GUARD=1 and a PYTHONPATH entry
    whose sitecustomize installs it at interpreter start (any venv, engine importable or not).
    """
    os.environ.update(OFFLINE_ENV)
    install_egress_guard()
    os.environ["STUDIO_EGRESS_GUARD"] = "1"
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(CHILD_GUARD_DIR) not in paths and CHILD_GUARD_DIR.is_dir():
        os.environ["PYTHONPATH"] = os.pathsep.join([str(CHILD_GUARD_DIR), *paths])


def user_env(var: str) -> str | None:
    """The value `var` had before the first `confine_caches` (its current value if never confined)."""
    return _USER_ENV[var] if var in _USER_ENV else os.environ.get(var)


def confine_caches(directory: str | Path) -> Path:
    """Point every library cache and temp directory into `directory` (created, mode 0700).

    Must run before transformers/datasets/torch are imported: several read these at import time.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _USER_ENV:
        _USER_ENV.update({var: os.environ.get(var) for var in (*CACHE_ENV_SUBDIRS, "HOME")})
    for var, sub in CACHE_ENV_SUBDIRS.items():
        path = root / sub
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ[var] = str(path)
    tempfile.tempdir = os.environ["TMPDIR"]
    return root
