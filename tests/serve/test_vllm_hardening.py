"""The vLLM child's hardening: egress guard in its environment, a per-start API key only the gateway
knows, reserved `extra_args` refused; and, against a real vLLM behind the gateway, injective adapter
ids, usage on the last chunk only, abandoned streams billed.

The first tests need no vLLM; the rest start one gateway with the vLLM backend (~1 min on 2 CPU
cores) and skip, with the reason, when no vLLM interpreter is installed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.errors import ConfigError, StudioError
from engine.generation.vllm_env import SETUP_HINT, VLLMInstall, find_vllm
from engine.generation.vllm_server import GATE_DIR, GATE_MIDDLEWARE, VLLMBackend
from engine.offline import CHILD_GUARD_DIR
from tests.helpers import EGRESS_PROBE, settled
from tests.serve.conftest import (MSGS, TINY, VLLM_PYTHON, Served, add_colliding_tenants, answer,
                                  make_lora, running_gateway, served_workspace)



# ----------------------------------------------------------------------------- no vLLM needed
def test_child_environment_loads_the_egress_guard_and_carries_the_key(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                      str(CHILD_GUARD_DIR)]))
    monkeypatch.delenv("STUDIO_EGRESS_GUARD", raising=False)
    b = VLLMBackend(tmp_path / "model", base_id="base", cache_dir=tmp_path / "cache")
    env = b._env()
    # the guard and the key middleware, and not the engine's own path
    assert env["PYTHONPATH"].split(os.pathsep) == [str(CHILD_GUARD_DIR), str(GATE_DIR)]
    assert (CHILD_GUARD_DIR / "sitecustomize.py").is_file()
    assert (GATE_DIR / (GATE_MIDDLEWARE.split(".")[0] + ".py")).is_file()
    assert env["STUDIO_EGRESS_GUARD"] == "1"
    assert len(env["VLLM_API_KEY"]) >= 32
    b.install, b.port = VLLMInstall(Path("/x/python"), "vllm", "0.33.0", "3.12.3"), 8123
    argv = b.argv(tmp_path / "model")
    assert env["VLLM_API_KEY"] not in " ".join(argv)  # a command line is readable by every local user
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "--api-key" not in argv and argv[argv.index("--middleware") + 1] == GATE_MIDDLEWARE


def test_reserved_vllm_extra_args_are_refused(tmp_path: Path) -> None:
    from engine.config.loading import parse_config

    base = "kind: serve\nserve:\n  base_model: tiny\n  backend: vllm\n  vllm:\n    extra_args: {}\n"
    for args in (["--host", "0.0.0.0"], ["--port=9"], ["--api-key", "k"], ["--api_key=k"],
                 ["--ho", "0.0.0.0"], ["--allowed-origins", '["*"]'], ["--config", "x.yaml"],
                 ["--enable-log-requests"], ["--middleware", "m.M"], ["--uds", "/tmp/s"],
                 ["--lora-modules", "x=/y"], ["--trust-remote-code"]):
        with pytest.raises(ConfigError) as err:
            parse_config(base.format(json.dumps(args)), "serve.yaml")
        assert "serve.vllm.extra_args" in str(err.value) and args[0].split("=")[0] in str(err.value)
    ok = parse_config(base.format(json.dumps(["--max-num-seqs", "32", "--enforce-eager"])), "serve.yaml")
    assert ok.serve.vllm.extra_args == ["--max-num-seqs", "32", "--enforce-eager"]
    with pytest.raises(StudioError, match="--port"):
        VLLMBackend(tmp_path, base_id="b", cache_dir=tmp_path, extra_args=["--port", "1"])


# ----------------------------------------------------------------------------- a real vLLM
needs_vllm = pytest.mark.skipif(VLLM_PYTHON is None, reason=f"no vLLM interpreter found; {SETUP_HINT}")


@needs_vllm
def test_the_vllm_interpreter_is_blocked_with_the_child_environment(tmp_path: Path) -> None:
    install = find_vllm(VLLM_PYTHON)
    assert install is not None
    b = VLLMBackend(tmp_path / "model", base_id="base", cache_dir=tmp_path / "cache")
    log = tmp_path / "egress.jsonl"
    env = {**b._env(), "STUDIO_EGRESS_LOG": str(log)}
    res = subprocess.run([str(install.python), "-c", EGRESS_PROBE], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.stdout.split() == ["BLOCKED", "BLOCKED"], res.stderr[-2000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["kind"], r["address"]) for r in rows] == [("connect", "192.0.2.1:443"),
                                                         ("getaddrinfo", "huggingface.co")]


@pytest.fixture(scope="module")
def vgw(tmp_path_factory: pytest.TempPathFactory, session_dir: Path) -> Iterator[Served]:
    if VLLM_PYTHON is None:
        pytest.skip(f"no vLLM interpreter found; {SETUP_HINT}")
    from engine.config import ServeSpec
    from tests.serve.vllm_helpers import build_vllm_tiny

    model_dir = build_vllm_tiny(session_dir / "vllm-tiny-gateway")
    adapters = {name: make_lora(model_dir, session_dir / "vllm-gateway-adapters" / name, seed)
                for name, seed in (("a1", 1), ("a2", 2))}
    ws, keys = served_workspace(tmp_path_factory.mktemp("vllm-hardening") / "ws", model_dir, adapters)
    add_colliding_tenants(ws, keys, adapters)
    spec = ServeSpec(backend="vllm", base_model=TINY, port=0, reload_interval_s=0.3,
                     default_max_tokens=16, max_tokens_limit=64,
                     vllm={"python": VLLM_PYTHON, "dtype": "float32", "max_model_len": 512,
                           "max_lora_rank": 8})
    with running_gateway(spec, ws, keys, adapters) as served:
        yield served


def test_vllm_answers_only_with_the_gateway_key_and_runs_guarded(vgw: Served) -> None:
    backend = vgw.backend
    with httpx.Client(base_url=backend.base_url, trust_env=False, timeout=30) as direct:
        assert direct.get("/health").status_code == 200
        assert direct.get("/v1/models").status_code == 401
        assert direct.get("/v1/models", headers={"Authorization": "Bearer guess"}).status_code == 401
        r = direct.post("/v1/load_lora_adapter", json={"lora_name": "evil", "lora_path": "/tmp"})
        assert r.status_code == 401
        r = direct.post("/v1/chat/completions", json={"model": TINY, "messages": MSGS, "max_tokens": 2})
        assert r.status_code == 401
        # paths vLLM's own key check leaves open: the gate middleware closes them
        r = direct.post("/invocations", json={"model": TINY, "messages": MSGS, "max_tokens": 2})
        assert r.status_code == 401
        for path in ("/version", "/metrics", "/load"):
            assert direct.get(path).status_code == 401, path
        assert direct.post("/tokenize", json={"model": TINY, "prompt": "hi"}).status_code == 401
        key = {"Authorization": f"Bearer {backend._api_key}"}
        assert direct.get("/version", headers=key).status_code == 200
    assert answer(vgw, "acme", "support")   # the gateway has the key
    pid = backend.proc.pid
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
    assert environ["PYTHONPATH"].split(os.pathsep)[0] == str(CHILD_GUARD_DIR)
    assert environ["STUDIO_EGRESS_GUARD"] == "1"
    assert environ["VLLM_API_KEY"] not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[cmdline.index(b"--host") + 1] == b"127.0.0.1"


def test_vllm_colliding_names_are_served_apart(vgw: Served) -> None:
    a1, a2 = answer(vgw, "acme", "support"), answer(vgw, "globex", "support")
    assert a1 != a2
    assert answer(vgw, "acme", "x--support") == a1
    assert answer(vgw, "acme--x", "support") == a2


def _usage(gw: Served, tenant: str, model: str) -> tuple[int, int, int]:
    with sqlite3.connect(gw.registry_path) as db:
        row = db.execute("SELECT SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) FROM usage "
                         "WHERE tenant=? AND model=?", (tenant, model)).fetchone()
    return tuple(int(v or 0) for v in row)  # type: ignore[return-value]


def test_vllm_stream_usage_is_on_the_last_chunk_and_billed_when_abandoned(vgw: Served) -> None:
    body = {"model": TINY, "messages": MSGS, "max_tokens": 32, "temperature": 0}
    full = vgw.client("load").chat.completions.create(**body)
    with vgw.http("load") as http:
        lines = [line for line in http.post("/v1/chat/completions", json={
            **body, "stream": True, "stream_options": {"include_usage": True}}).text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]
    chunks = [json.loads(line[6:]) for line in lines]
    assert all(c.get("usage") is None for c in chunks if c["choices"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == \
        full.usage.completion_tokens

    before = settled(lambda: _usage(vgw, "load", TINY))  # the requests above written too
    client = vgw.http("load")
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        for line in r.iter_lines():  # hang up at the finish chunk, before the usage chunk
            if line.startswith("data: ") and any(c.get("finish_reason")
                                                 for c in json.loads(line[6:])["choices"]):
                break
    client.close()
    deadline = time.monotonic() + 20
    while _usage(vgw, "load", TINY)[0] == before[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    after = _usage(vgw, "load", TINY)
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == \
        (1, full.usage.prompt_tokens, full.usage.completion_tokens)
