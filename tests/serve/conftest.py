"""Serving fixtures: a workspace with the tiny model imported, two LoRA adapters, a live gateway."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import random_lora


def make_lora(base_dir: Path, out_dir: Path, seed: int) -> Path:
    """A LoRA adapter for the tiny model with random non-zero B (so its outputs differ from the base)."""
    return random_lora(base_dir, out_dir, seed, rank=4, alpha=16,
                       targets=["q_proj", "v_proj", "o_proj"], scale=0.5)


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir: Path, session_dir: Path) -> dict[str, Path]:
    """Two different LoRA adapters on the tiny model."""
    return {name: make_lora(tiny_model_dir, session_dir / "serve-adapters" / name, seed)
            for name, seed in (("a1", 1), ("a2", 2))}


@dataclass
class Served:
    """A live gateway for the tests: its OpenAI base URL, keys per tenant, and where its data lives."""

    base_url: str  # http://127.0.0.1:PORT/v1
    url: str  # http://127.0.0.1:PORT
    keys: dict[str, str]  # "admin", "acme", "globex", "load" -> bearer token
    registry_path: Path
    base_model: str
    adapters: dict[str, Path]
    backend: Any  # the backend object when in-process (None for an external one)

    def client(self, who: str, **kw: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.keys[who], max_retries=0, timeout=60, **kw)

    def http(self, who: str | None = None) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


TINY = "tiny"


def served_workspace(root: Path, tiny_model_dir: Path, adapters: dict[str, Path]) -> tuple[Any, dict[str, str]]:
    """A workspace with the tiny model imported, keys for three tenants and an admin, two promotions."""
    from engine.models.store import import_model
    from engine.registry import Registry, now_iso
    from engine.serve.keys import KeyStore
    from engine.serve.promote import ServedModels
    from engine.workspace import Workspace

    ws = Workspace(root).ensure()
    import_model(ws, Registry(ws.registry_path), str(tiny_model_dir), TINY)
    store = KeyStore(ws.registry_path)
    keys = {t: store.create(t, "test")[0] for t in ("acme", "globex", "load")}
    keys["admin"] = store.create("ops", "root", role="admin")[0]
    served = ServedModels(ws.registry_path)
    for tenant, name, adapter in (("acme", "support", "a1"), ("globex", "support", "a2"),
                                  ("acme", "billing", "a2")):
        served.upsert({"tenant": tenant, "name": name, "run_id": f"run-{adapter}",
                       "adapter_path": str(adapters[adapter]), "base_model": TINY,
                       "promoted_at": now_iso(), "demoted_at": None, "forced": 1})
    return ws, keys


def add_colliding_tenants(ws: Any, keys: dict[str, str], adapters: dict[str, Path]) -> None:
    """Two tenants whose names collide under a `<tenant>--<name>` id: acme/x--support (adapter
    a1) and acme--x/support (adapter a2)."""
    from engine.registry import now_iso
    from engine.serve.keys import KeyStore
    from engine.serve.promote import ServedModels

    keys["acme--x"] = KeyStore(ws.registry_path).create("acme--x", "test")[0]
    for tenant, name, adapter in (("acme", "x--support", "a1"), ("acme--x", "support", "a2")):
        ServedModels(ws.registry_path).upsert({
            "tenant": tenant, "name": name, "run_id": f"run-{adapter}",
            "adapter_path": str(adapters[adapter]), "base_model": TINY,
            "promoted_at": now_iso(), "demoted_at": None, "forced": 1})


@contextmanager
def running_gateway(spec: Any, ws: Any, keys: dict[str, str],
                    adapters: dict[str, Path]) -> Iterator[Served]:
    """A gateway for `spec` on a free loopback port, in a thread, stopped at the end."""
    from engine.registry import Registry
    from engine.serve.server import start_in_thread

    running = start_in_thread(spec, ws, Registry(ws.registry_path))
    try:
        yield Served(f"{running.url}/v1", running.url, keys, ws.registry_path, TINY, adapters,
                     running.gateway.backend)
    finally:
        running.stop()


MSGS = [{"role": "user", "content": "Hello, my router keeps dropping the connection."}]


def answer(gw: Served, who: str, model: str) -> str:
    """A greedy chat answer of `model` for the key of `who`."""
    return gw.client(who).chat.completions.create(
        model=model, messages=MSGS, max_tokens=12, temperature=0).choices[0].message.content


def _vllm_python() -> str | None:
    """The interpreter with vLLM the gateway tests also run against: $STUDIO_TEST_VLLM_PYTHON, else
    the one the engine would find ($STUDIO_VLLM_PYTHON, .venv-vllm — CI builds it)."""
    if os.environ.get("STUDIO_TEST_VLLM_PYTHON"):
        return os.environ["STUDIO_TEST_VLLM_PYTHON"]
    from engine.generation.vllm_env import find_vllm

    install = find_vllm()
    return str(install.python) if install is not None else None


VLLM_PYTHON = _vllm_python()
BACKENDS = ["transformers"] + (["vllm"] if VLLM_PYTHON else [])


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           tiny_model_dir: Path, tiny_adapters: dict[str, Path], session_dir: Path) -> Iterator[Served]:
    """A real gateway on a free loopback port, parametrized over backends (one per param).

    vLLM's CPU kernels need attention heads of size >= 32, so the vLLM gateway serves the tiny
    model's vLLM-sized sibling (same tokenizer and template) with adapters made for it."""
    from engine.config import ServeSpec

    model_dir, adapters = tiny_model_dir, tiny_adapters
    if request.param == "vllm":
        from tests.serve.vllm_helpers import build_vllm_tiny

        model_dir = build_vllm_tiny(session_dir / "vllm-tiny-gateway")
        adapters = {name: make_lora(model_dir, session_dir / "vllm-gateway-adapters" / name, seed)
                    for name, seed in (("a1", 1), ("a2", 2))}
    ws, keys = served_workspace(tmp_path_factory.mktemp("served") / "ws", model_dir, adapters)
    spec = ServeSpec(backend=request.param, base_model=TINY, port=0, reload_interval_s=0.3,
                     default_max_tokens=16, max_tokens_limit=64, threads=1,
                     batching={"max_batch_size": 8, "batch_wait_ms": 20},
                     vllm={"python": VLLM_PYTHON, "dtype": "float32",
                           "max_model_len": 512, "max_lora_rank": 8})
    with running_gateway(spec, ws, keys, adapters) as served:
        yield served
