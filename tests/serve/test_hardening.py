"""Multi-tenant hardening of the gateway (transformers backend, a real server on loopback): injective
adapter ids, request body cap, prompts tokenized off the event loop, streams billed when abandoned,
NaN/inf refused, admin mistakes as JSON 4xx, safetensors-only adapters."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from engine.errors import StudioError
from engine.serve.routes import internal_id, parse_internal_id
from engine.workspace import check_name
from engine.serve.promote import ServedModels
from tests.helpers import settled, wait_until
from tests.serve.conftest import (MSGS, TINY, Served, add_colliding_tenants, answer,
                                  running_gateway, served_workspace)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
       tiny_adapters: dict[str, Path]) -> Iterator[Served]:
    """The standard served workspace plus two tenants whose names collide under `<t>--<n>`:
    acme/x--support (adapter a1) and acme--x/support (adapter a2)."""
    from engine.config import ServeSpec

    ws, keys = served_workspace(tmp_path_factory.mktemp("hardening") / "ws", tiny_model_dir,
                                tiny_adapters)
    add_colliding_tenants(ws, keys, tiny_adapters)
    spec = ServeSpec(base_model=TINY, port=0, reload_interval_s=0.3, default_max_tokens=16,
                     max_tokens_limit=64, threads=1, batching={"batch_wait_ms": 5})
    with running_gateway(spec, ws, keys, tiny_adapters) as served:
        yield served


# ------------------------------------------------------------------------------- adapter ids
def test_internal_ids_are_injective_and_invertible() -> None:
    assert internal_id("acme", "x--support") != internal_id("acme--x", "support")
    pairs = [("acme", "x--support"), ("acme--x", "support"), ("a_b", "c.d"), ("a.b", "c_d"),
             ("a", "b__c"), ("a__b", "c"), ("a_u", "b"), ("a", "u_b"), ("t", "n")]
    ids = [internal_id(t, n) for t, n in pairs]
    assert len(set(ids)) == len(ids)
    for pair, value in zip(pairs, ids):
        assert parse_internal_id(value) == pair
        assert "." not in value           # PEFT refuses dotted adapter names
        with pytest.raises(StudioError):  # never a model store name, so never the base model's id
            check_name(value, "model")
    for bad in ("acme--support", "_acme", "_a__b_x", "_A__b"):
        with pytest.raises(ValueError):
            parse_internal_id(bad)
    with pytest.raises(StudioError):
        internal_id("Acme", "support")


def test_colliding_names_are_served_apart_and_demoted_apart(gw: Served) -> None:

    a1 = answer(gw, "acme", "support")        # adapter a1
    a2 = answer(gw, "globex", "support")      # adapter a2
    assert a1 != a2
    assert answer(gw, "acme", "x--support") == a1
    assert answer(gw, "acme--x", "support") == a2
    with gw.http("admin") as admin:
        ids = {(r["tenant"], r["name"]): r["internal_id"] for r in admin.get("/admin/adapters").json()["data"]}
    assert ids[("acme", "x--support")] != ids[("acme--x", "support")]

    ServedModels(gw.registry_path).demote("acme--x", "support")
    acme_x = gw.client("acme--x")
    assert wait_until(lambda: "support" not in [m.id for m in acme_x.models.list()])
    assert "x--support" in [m.id for m in gw.client("acme").models.list()]
    assert answer(gw, "acme", "x--support") == a1   # the other tenant's model is still served


# ------------------------------------------------------------------------------- validation
def test_nan_and_infinite_sampling_values_are_refused(gw: Served) -> None:
    with gw.http("acme") as http:
        for field, literal in (("temperature", "NaN"), ("temperature", "Infinity"),
                               ("top_p", "NaN"), ("top_p", "-Infinity")):
            raw = ('{"model": "support", "max_tokens": 4, "messages": [{"role": "user", '
                   f'"content": "hi"}}], "{field}": {literal}}}')
            r = http.post("/v1/chat/completions", content=raw.encode(),
                          headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (field, literal, r.text)
            assert r.json()["error"]["param"] == field


def test_admin_mistakes_are_json_4xx(gw: Served) -> None:
    with gw.http("admin") as admin:
        r = admin.post("/admin/keys", json={"tenant": "Bad Tenant!"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_value"
        assert "invalid tenant name" in r.json()["error"]["message"]
        r = admin.delete("/admin/keys/ffffffff")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = admin.post("/admin/adapters", json={"tenant": "Bad!", "name": "x",
                                                "adapter_path": str(gw.adapters["a1"])})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def _pickle_adapter(src: Path, dest: Path) -> Path:
    """The same LoRA saved the old way: adapter_model.bin (a pickle), no safetensors."""
    from safetensors.torch import load_file

    if not (dest / "adapter_model.bin").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "adapter_config.json").write_bytes((src / "adapter_config.json").read_bytes())
        torch.save(load_file(src / "adapter_model.safetensors"), dest / "adapter_model.bin")
    return dest


def test_pickle_adapters_are_never_loaded(gw: Served, tmp_path: Path) -> None:
    pickled = _pickle_adapter(gw.adapters["a1"], tmp_path / "pickled")
    with gw.http("admin") as admin:
        r = admin.post("/admin/adapters", json={"tenant": "acme", "name": "pickled",
                                                "adapter_path": str(pickled)})
        assert r.status_code == 400, r.text
        assert "safetensors" in r.json()["error"]["message"]
    assert "pickled" not in [m.id for m in gw.client("acme").models.list()]


# ------------------------------------------------------------------------------- body cap
def _raw(gw: Served, head: bytes, body_parts: list[bytes], timeout: float = 15.0) -> tuple[int, float]:
    """Send a request over a bare socket (the body possibly incomplete); (status, seconds to answer)."""
    host, port = gw.url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head)
        for part in body_parts:
            try:
                s.sendall(part)
            except OSError:  # the server answered and closed while we were still sending
                break
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), time.monotonic() - t0


def test_bodies_over_the_cap_get_413_before_they_are_read(gw: Served) -> None:
    limit = 4 * 1024 * 1024  # the default serve.max_request_bytes
    auth = f"Authorization: Bearer {gw.keys['acme']}\r\n".encode()
    # declared too large: refused from the header, the 48 MiB are never sent
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + auth + f"Content-Length: {48 * 1024 * 1024}\r\n\r\n".encode())
    status, seconds = _raw(gw, head, [b'{"model": "support", "messages": ['])
    assert status == 413 and seconds < 10
    # chunked (no length): refused once the chunks received pass the cap, the rest never sent
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + auth + b"Transfer-Encoding: chunked\r\n\r\n")
    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    # exactly the cap, then 16 bytes more (the last thing sent, so the server has read all of it
    # when it answers); the terminating chunk never comes
    parts = [chunk(b"x" * (1024 * 1024))] * (limit // (1024 * 1024)) + [chunk(b"y" * 16)]
    status, seconds = _raw(gw, head, parts)
    assert status == 413 and seconds < 10
    # an admin body too
    head = (b"POST /admin/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {gw.keys['admin']}\r\n".encode()
            + f"Content-Length: {limit + 1}\r\n\r\n".encode())
    assert _raw(gw, head, [b"{"])[0] == 413
    # the gateway keeps serving
    assert answer(gw, "acme", "support")


def test_a_huge_prompt_is_tokenized_off_the_event_loop(gw: Served) -> None:
    """~3.8 MB of prompt (under the 4 MiB cap) takes seconds to tokenize; meanwhile /health answers."""
    big = {"model": "support", "max_tokens": 4,
           "messages": [{"role": "user", "content": "my router keeps dropping the line. " * 110_000}]}
    result: dict[str, Any] = {}

    def send() -> None:
        t0 = time.monotonic()
        with gw.http("acme") as http:
            result["response"] = http.post("/v1/chat/completions", json=big, timeout=120)
        result["seconds"] = time.monotonic() - t0

    sender = threading.Thread(target=send)
    latencies = []
    with httpx.Client(base_url=gw.url, timeout=120) as health:
        sender.start()
        time.sleep(0.3)   # the body is in and being tokenized
        while sender.is_alive():
            t0 = time.monotonic()
            assert health.get("/health").status_code == 200
            latencies.append(time.monotonic() - t0)
            time.sleep(0.02)
    sender.join()
    response = result["response"]
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    assert result["seconds"] > 1.0, "the prompt must take a while to tokenize for this test to mean anything"
    assert latencies and max(latencies) < max(0.3, result["seconds"] / 4), (max(latencies), result["seconds"])


# ------------------------------------------------------------------------------- billing
def _usage(gw: Served, tenant: str, model: str) -> tuple[int, int, int]:
    with sqlite3.connect(gw.registry_path) as db:
        row = db.execute("SELECT SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) FROM usage "
                         "WHERE tenant=? AND model=?", (tenant, model)).fetchone()
    return tuple(int(v or 0) for v in row)  # type: ignore[return-value]


def _stream_and_hang_up(gw: Served, who: str, body: dict[str, Any], stop_after: Any) -> None:
    """A real streaming client that reads chunks until `stop_after(chunk)` and then disconnects."""
    client = gw.http(who)
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True,
                                                             "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                assert chunk.get("usage") is None or not chunk["choices"]  # usage on the last chunk only
                if stop_after(chunk):
                    break
    client.close()


def test_an_abandoned_stream_is_billed_what_it_generated(gw: Served) -> None:
    body = {"model": TINY, "messages": MSGS, "max_tokens": 64, "temperature": 0}
    full = gw.client("load").chat.completions.create(**body)
    assert full.usage.completion_tokens >= 8, "the answer must be long enough to hang up inside it"
    before = settled(lambda: _usage(gw, "load", TINY))  # the request above written too

    # after the last token (the finish chunk), before the usage chunk
    _stream_and_hang_up(gw, "load", body, lambda c: any(ch.get("finish_reason") for ch in c["choices"]))
    assert wait_until(lambda: _usage(gw, "load", TINY)[0] == before[0] + 1)
    after = _usage(gw, "load", TINY)
    assert (after[1] - before[1], after[2] - before[2]) == (full.usage.prompt_tokens,
                                                            full.usage.completion_tokens)

    # in the middle: three pieces of text, then gone — billed at least those tokens, at most all
    seen = []
    _stream_and_hang_up(gw, "load", body, lambda c: bool(
        [ch for ch in c["choices"] if ch["delta"].get("content")] and seen.append(1) is None
        and len(seen) >= 3))
    assert wait_until(lambda: _usage(gw, "load", TINY)[0] == after[0] + 1)
    final = _usage(gw, "load", TINY)
    assert final[1] - after[1] == full.usage.prompt_tokens
    assert 3 <= final[2] - after[2] <= full.usage.completion_tokens
