"""The egress guard and the offline environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine import offline
from engine.errors import EgressBlocked, StudioError


def test_enforce_sets_offline_and_no_telemetry_variables() -> None:
    offline.enforce()
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                "HF_HUB_DISABLE_TELEMETRY", "DO_NOT_TRACK", "VLLM_NO_USAGE_STATS"):
        assert os.environ[var] == "1", var
    assert os.environ["WANDB_MODE"] == "disabled"
    assert offline.guard_installed()


@pytest.mark.parametrize("address", [("93.184.216.34", 80), ("10.0.0.1", 443), ("8.8.8.8", 53),
                                     ("2001:4860:4860::8888", 443)])
def test_non_loopback_connection_raises_egress_blocked(address: tuple[str, int]) -> None:
    offline.enforce()
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        with pytest.raises(EgressBlocked) as info:
            s.connect(address)
    assert address[0] in str(info.value)
    assert isinstance(info.value, StudioError)


def test_name_lookup_and_create_connection_are_blocked() -> None:
    offline.enforce()
    with pytest.raises(EgressBlocked, match="huggingface.co"):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(EgressBlocked):
        socket.create_connection(("example.com", 80), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(EgressBlocked):
            s.sendto(b"x", ("1.1.1.1", 53))


def test_loopback_stays_allowed() -> None:
    offline.enforce()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        got.append(conn.recv(5))
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(("localhost", port), timeout=5) as c:
        c.sendall(b"hello")
    t.join(5)
    server.close()
    assert got == [b"hello"]


def test_huggingface_hub_download_fails_locally_without_trying_the_network() -> None:
    """Offline mode is on before the hub library is imported: it never even tries to connect."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    assert constants.HF_HUB_OFFLINE is True
    with pytest.raises(LocalEntryNotFoundError) as info:
        hf_hub_download("HuggingFaceTB/SmolLM2-135M-Instruct", "config.json")
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert not any(isinstance(e, EgressBlocked) for e in chain)


def test_cli_process_blocks_egress() -> None:
    """The guard is installed by the entry point: a fresh interpreter running the CLI's main."""
    code = ("import socket, sys\n"
            "from engine import cli\n"
            "sys.argv=['studio','--help']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "s=socket.socket()\n"
            "try:\n    s.connect(('203.0.113.5', 80))\nexcept Exception as e:\n    print(type(e).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "EgressBlocked"


def test_is_loopback() -> None:
    assert offline.is_loopback("127.0.0.1")
    assert offline.is_loopback("127.8.9.10")
    assert offline.is_loopback("::1")
    assert offline.is_loopback("localhost")
    assert not offline.is_loopback("192.168.1.1")
    assert not offline.is_loopback("localhost.evil.com")
    assert not offline.is_loopback(None)


def test_job_tmp_confines_caches_and_restores_them_afterwards(tmp_path) -> None:
    """Inside a job every cache and temp dir points into the tenant's job dir; afterwards the dir
    is gone and the process is back to its previous confinement (never to a deleted dir)."""
    import os
    import tempfile

    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws").ensure()
    before = {v: os.environ.get(v) for v in ("TMPDIR", "HF_HOME", "HF_DATASETS_CACHE")}
    before_tempdir = tempfile.gettempdir()
    with ws.job_tmp("acme") as job:
        assert os.environ["TMPDIR"].startswith(str(job)) and tempfile.gettempdir().startswith(str(job))
        assert os.environ["HF_DATASETS_CACHE"].startswith(str(job))
        with tempfile.NamedTemporaryFile(dir=None) as f:
            assert f.name.startswith(str(ws.tmp_dir("acme")))
    assert not job.exists()
    assert {v: os.environ.get(v) for v in before} == before
    assert tempfile.gettempdir() == before_tempdir and Path(tempfile.mkdtemp()).is_dir()
