"""Back-pressure: a tenant over its concurrency limit gets 429 (counted as an error); others are unaffected."""

from __future__ import annotations

import sqlite3
import threading
import time

import openai
from openai import OpenAI


def test_tenant_concurrency_limit_answers_429(tmp_path, tiny_model_dir, tiny_adapters):
    from engine.config import ServeSpec
    from engine.registry import Registry
    from engine.serve.server import start_in_thread
    from tests.serve.conftest import TINY, served_workspace

    ws, keys = served_workspace(tmp_path / "ws", tiny_model_dir, tiny_adapters)
    # a long batch wait keeps the first request in flight while the second one arrives
    spec = ServeSpec(base_model=TINY, port=0, reload_interval_s=0, max_concurrent_per_tenant=1, threads=1,
                     batching={"batch_wait_ms": 800})
    running = start_in_thread(spec, ws, Registry(ws.registry_path))
    url = f"{running.url}/v1"
    results: dict[str, object] = {}

    def first() -> None:
        client = OpenAI(base_url=url, api_key=keys["acme"], max_retries=0)
        results["first"] = client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0)

    try:
        t = threading.Thread(target=first)
        t.start()
        time.sleep(0.3)
        acme = OpenAI(base_url=url, api_key=keys["acme"], max_retries=0)
        try:
            acme.chat.completions.create(model="support", messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=3)
            raise AssertionError("expected 429")
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "rate_limit_exceeded"
        other = OpenAI(base_url=url, api_key=keys["globex"], max_retries=0)  # another tenant: served
        assert other.chat.completions.create(model="support", messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=3).choices
        t.join(30)
        assert results["first"].choices[0].finish_reason in ("stop", "length")
    finally:
        running.stop()
    with sqlite3.connect(ws.registry_path) as db:
        row = db.execute("SELECT SUM(requests), SUM(errors) FROM usage "  # summed over UTC days
                         "WHERE tenant='acme' AND model='support'").fetchone()
    assert row == (2, 1)
