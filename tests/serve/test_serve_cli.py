"""`studio serve CONFIG` in the foreground: ready line, real requests, access log without content, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from engine.config import load_config
from tests.helpers import interruptible, serving_url
from tests.serve.conftest import TINY, served_workspace

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid():
    cfg = load_config(ROOT / "configs" / "serve.yaml")
    assert cfg.kind == "serve" and cfg.serve.backend == "transformers" and cfg.serve.host == "127.0.0.1"


def test_serve_foreground_logs_no_content_and_stops_on_ctrl_c(tmp_path, tiny_model_dir, tiny_adapters):
    import httpx

    ws, keys = served_workspace(tmp_path / "ws", tiny_model_dir, tiny_adapters)
    data = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    data["serve"].update(base_model=TINY, port=0, reload_interval_s=0)
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_", "TRANSFORMERS_", "TMPDIR"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "engine", "--workspace", str(ws.root), "serve", str(config),
                             "--status-every", "0.5"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=interruptible)
    lines: list[str] = []
    try:
        url = serving_url(proc, lines)
        assert url, "".join(lines)
        assert "3 adapter(s) for 2 tenant(s)" in "".join(lines)
        secret = "SECRET-CUSTOMER-TEXT-0815"
        r = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {keys['acme']}"},
                       json={"model": "support", "max_tokens": 5, "temperature": 0,
                             "messages": [{"role": "user", "content": secret}]}, timeout=60)
        assert r.status_code == 200
        answer = r.json()["choices"][0]["message"]["content"]
        assert httpx.get(f"{url}/v1/models").status_code == 401
        time.sleep(1.5)  # one status line for the traffic above
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode == 130, log  # the CLI's exit code for Ctrl-C
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log and '"GET /v1/models HTTP/1.1" 401' in log
    assert secret not in log and keys["acme"] not in log
    assert answer.strip() == "" or answer not in log
    assert "gateway stopped" in log and "Application shutdown complete" in log
    assert re.search(r"status \+1 requests \(\+0 errors\), \+\d+ completion tokens", log), log


def test_a_busy_port_is_a_user_error_before_any_weights_load(tmp_path, tiny_model_dir, tiny_adapters):
    import socket

    ws, _ = served_workspace(tmp_path / "ws", tiny_model_dir, tiny_adapters)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        data = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
        data["serve"].update(base_model=TINY, port=busy.getsockname()[1])
        config = tmp_path / "serve.yaml"
        config.write_text(yaml.safe_dump(data))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        res = subprocess.run([sys.executable, "-m", "engine", "--workspace", str(ws.root), "serve", str(config)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "cannot listen on 127.0.0.1:" in res.stderr
    assert "Traceback" not in res.stderr and "startup" not in res.stderr
