"""Egress guard for child Python processes: loaded at interpreter start through PYTHONPATH.

`engine.offline.enforce()` puts this folder on PYTHONPATH and sets STUDIO_EGRESS_GUARD=1, so any
Python started by a studio command (torchrun workers, servers, helper scripts, other venvs)
refuses non-loopback connections and name lookups from its first line, and logs each attempt to
$STUDIO_EGRESS_LOG when set. Self-contained: it must work where `engine` is not importable.
Afterwards the next `sitecustomize` on sys.path (if any) still runs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import time


def _loopback(host: object) -> bool:
    if isinstance(host, (bytes, bytearray)):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower()
    if name in {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _log(kind: str, address: str) -> None:
    path = os.environ.get("STUDIO_EGRESS_LOG")
    if path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, json.dumps({"ts": time.time(), "pid": os.getpid(), "kind": kind,
                                     "address": address}).encode() + b"\n")
            os.close(fd)
        except OSError:
            pass


def _install() -> None:
    if getattr(socket, "_studio_guard", False):
        return
    cls = socket.socket
    connect, connect_ex, sendto, getaddrinfo = cls.connect, cls.connect_ex, cls.sendto, socket.getaddrinfo

    def check(sock: socket.socket, address: object) -> None:
        if sock.family == getattr(socket, "AF_UNIX", None):
            return
        if isinstance(address, tuple) and address and not _loopback(address[0]):
            where = f"{address[0]}:{address[1] if len(address) > 1 else ''}"
            _log("connect", where)
            raise ConnectionRefusedError(f"network egress blocked by the offline guard: {where}")

    def g_connect(self, address):  # type: ignore[no-untyped-def]
        check(self, address)
        return connect(self, address)

    def g_connect_ex(self, address):  # type: ignore[no-untyped-def]
        check(self, address)
        return connect_ex(self, address)

    def g_sendto(self, data, *args):  # type: ignore[no-untyped-def]
        check(self, args[-1])
        return sendto(self, data, *args)

    def g_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host is not None and not _loopback(host):
            _log("getaddrinfo", str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"name lookup blocked by the offline guard: {host}")
        return getaddrinfo(host, *args, **kwargs)

    sendmsg = getattr(cls, "sendmsg", None)

    def g_sendmsg(self, buffers, *args):  # type: ignore[no-untyped-def]
        if len(args) >= 3 and args[2] is not None:  # (ancdata, flags, address)
            check(self, args[2])
        return sendmsg(self, buffers, *args)

    def lookup(kind, original):  # type: ignore[no-untyped-def]
        # gethostbyname & co.: a DNS query is itself a way out (the name carries the data)
        def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
            target = host[0] if isinstance(host, tuple) and host else host
            if not _loopback(target):
                _log(kind, str(target))
                raise socket.gaierror(socket.EAI_NONAME,
                                      f"name lookup blocked by the offline guard: {target}")
            return original(host, *args, **kwargs)
        return guarded

    cls.connect, cls.connect_ex, cls.sendto = g_connect, g_connect_ex, g_sendto  # type: ignore[method-assign]
    if sendmsg is not None:
        cls.sendmsg = g_sendmsg  # type: ignore[method-assign]
    socket.getaddrinfo = g_getaddrinfo  # type: ignore[assignment]
    import _socket

    for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        for module in (socket, _socket):
            if hasattr(module, name):
                setattr(module, name, lookup(name, getattr(module, name)))
    socket._studio_guard = True  # type: ignore[attr-defined]


def _chain() -> None:
    """Run the sitecustomize this one shadows, if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    me = sys.modules.pop("sitecustomize", None)
    saved = sys.path[:]
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        import importlib

        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    except Exception:  # a broken site file must not stop the guarded program
        pass
    finally:
        sys.path[:] = saved
        if me is not None:
            sys.modules["sitecustomize"] = me


if os.environ.get("STUDIO_EGRESS_GUARD") == "1":
    _install()
_chain()
