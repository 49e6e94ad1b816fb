"""Strict egress mode: every blocked attempt is logged; child Python processes inherit the guard."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine import offline
from engine.errors import EgressBlocked
from tests.helpers import EGRESS_PROBE

PROBE = EGRESS_PROBE + """
for call in (lambda: socket.gethostbyname("exfil.example.com"),
             lambda: socket.gethostbyname_ex("exfil.example.com"),
             lambda: socket.gethostbyaddr("192.0.2.1"),
             lambda: socket.getnameinfo(("192.0.2.1", 80), 0),
             lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendmsg([b"x"], [], 0,
                                                                            ("192.0.2.1", 53))):
    try:
        call()
        print("LEAKED")
    except OSError as exc:
        print("BLOCKED" if "offline guard" in str(exc) else f"OTHER {type(exc).__name__}")
print("LOCAL", socket.gethostbyname("localhost"))
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
c = socket.create_connection(s.getsockname(), timeout=2); print("LOOPBACK OK")
"""


def test_blocked_attempts_are_logged_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "egress.jsonl"
    monkeypatch.setenv("STUDIO_EGRESS_LOG", str(log))
    assert offline.guard_installed()
    with socket.socket() as s, pytest.raises(EgressBlocked):
        s.connect(("192.0.2.1", 80))
    with pytest.raises(EgressBlocked):
        socket.getaddrinfo("example.com", 443)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["kind"], r["address"]) for r in rows] == [("connect", "192.0.2.1:80"),
                                                         ("getaddrinfo", "example.com")]
    assert all(r["pid"] == os.getpid() for r in rows)


def test_dns_lookups_are_blocked_and_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every resolver call is a way out (the name carries the data): all of them are refused for
    non-loopback names, logged, and raised as a lookup failure that callers already handle."""
    import _socket

    log = tmp_path / "egress.jsonl"
    monkeypatch.setenv("STUDIO_EGRESS_LOG", str(log))
    calls = [("gethostbyname", lambda: socket.gethostbyname("exfil.example.com")),
             ("gethostbyname_ex", lambda: socket.gethostbyname_ex("exfil.example.com")),
             ("gethostbyaddr", lambda: socket.gethostbyaddr("192.0.2.7")),
             ("getnameinfo", lambda: socket.getnameinfo(("192.0.2.7", 80), 0)),
             ("gethostbyname", lambda: _socket.gethostbyname("raw.example.com"))]
    for _kind, call in calls:
        with pytest.raises(EgressBlocked) as exc:
            call()
        assert isinstance(exc.value, socket.gaierror)  # what resolver callers catch
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(EgressBlocked):
        udp.sendmsg([b"data"], [], 0, ("192.0.2.7", 53))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["kind"] for r in rows] == [k for k, _ in calls] + ["connect"]
    assert rows[0]["address"] == "exfil.example.com"
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    assert socket.getfqdn("192.0.2.7") == "192.0.2.7"  # a blocked lookup is an ordinary failure


def test_child_python_inherits_guard_and_offline_env(tmp_path: Path) -> None:
    log = tmp_path / "child-egress.jsonl"
    offline.enforce()  # what every entry point does; its environment is what children inherit
    env = dict(os.environ, STUDIO_EGRESS_LOG=str(log))
    assert str(offline.CHILD_GUARD_DIR) in env["PYTHONPATH"].split(os.pathsep)
    res = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)  # cwd: `engine` is not importable from here
    assert res.stdout.split() == ["BLOCKED"] * 7 + ["LOCAL", "127.0.0.1", "LOOPBACK", "OK"], (
        res.stdout, res.stderr)
    kinds = [json.loads(line)["kind"] for line in log.read_text().splitlines()]
    assert kinds == ["connect", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
                     "gethostbyaddr", "getnameinfo", "connect"]
    res = subprocess.run([sys.executable, "-c", "import os;print(os.environ['HF_HUB_OFFLINE'])"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "1"
