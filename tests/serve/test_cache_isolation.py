"""Per-tenant cache isolation: a vLLM-kind backend gets a `cache_salt` per tenant (a hash, not the name)."""

from __future__ import annotations

from engine.serve.backends.hf import HFBackend


class SaltRecordingBackend(HFBackend):
    """The real transformers backend, presenting itself as vLLM and recording the bodies it gets."""

    kind = "vllm"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.salts: list[tuple[str, str | None]] = []

    async def chat(self, body):
        self.salts.append((body["model"], body.pop("cache_salt", None)))
        return await super().chat(body)


def test_each_tenant_gets_its_own_cache_salt(tmp_path, tiny_model_dir, tiny_adapters):
    from openai import OpenAI

    from engine.config import ServeSpec
    from engine.serve.gateway import Gateway, cache_salt, create_app
    from engine.serve.server import run_in_thread
    from tests.serve.conftest import TINY, served_workspace

    ws, keys = served_workspace(tmp_path / "ws", tiny_model_dir, tiny_adapters)
    backend = SaltRecordingBackend(ws.model_dir(TINY), TINY, threads=1)
    gateway = Gateway(ServeSpec(base_model=TINY, reload_interval_s=0), backend, ws.registry_path)
    running = run_in_thread(gateway, create_app(gateway))
    try:
        for tenant in ("acme", "globex", "acme"):
            OpenAI(base_url=f"{running.url}/v1", api_key=keys[tenant], max_retries=0).chat.completions.create(
                model=TINY, messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0)
    finally:
        running.stop()
    salts = [salt for _, salt in backend.salts]
    assert salts == [cache_salt("acme"), cache_salt("globex"), cache_salt("acme")]
    assert salts[0] != salts[1] and all(s and "acme" not in s and "globex" not in s for s in salts)
