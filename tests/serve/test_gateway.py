"""The gateway end to end: a real server on loopback, the official `openai` client, real tiny models.

Every test takes the `served` fixture, which is parametrized over backends.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from engine.serve.promote import ServedModels
from tests.helpers import settled, wait_until

MSGS = [{"role": "user", "content": "Hello, my router keeps dropping the connection."}]


def _chat(client, model, stream=False, **kw):
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=MSGS, stream=stream, **kw)


def _stream_text(stream):
    text, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content = choice.delta.content if hasattr(choice, "delta") else choice.text
            text.append(content or "")
            finish = choice.finish_reason or finish
    return "".join(text), usage, finish


def test_models_are_listed_per_tenant(served):
    acme = sorted(m.id for m in served.client("acme").models.list())
    globex = sorted(m.id for m in served.client("globex").models.list())
    assert acme == ["billing", "support", served.base_model]
    assert globex == ["support", served.base_model]
    assert served.client("acme").models.retrieve("billing").id == "billing"
    with pytest.raises(openai.NotFoundError):
        served.client("globex").models.retrieve("billing")


def test_chat_streaming_equals_greedy_and_adapters_differ(served):
    acme = served.client("acme")
    texts = {}
    for model in (served.base_model, "support", "billing"):
        full = _chat(acme, model)
        text = full.choices[0].message.content
        assert full.model == model and full.object == "chat.completion"
        assert full.usage.prompt_tokens > 0 and 0 < full.usage.completion_tokens <= 12
        assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens
        streamed, usage, finish = _stream_text(_chat(acme, model, stream=True,
                                                     stream_options={"include_usage": True}))
        assert streamed == text and finish == full.choices[0].finish_reason
        assert (usage.prompt_tokens, usage.completion_tokens) == (full.usage.prompt_tokens,
                                                                  full.usage.completion_tokens)
        assert _chat(acme, model).choices[0].message.content == text  # greedy is repeatable
        texts[model] = text
    assert len(set(texts.values())) == 3, "base and the two adapters must answer differently"
    # the same name in another tenant is another adapter: globex/support is a2, like acme/billing
    assert _chat(served.client("globex"), "support").choices[0].message.content == texts["billing"]


def test_completions_and_stop(served):
    client = served.client("acme")
    full = client.completions.create(model="support", prompt="The weather today is", max_tokens=10,
                                     temperature=0)
    text = full.choices[0].text
    assert full.object == "text_completion" and full.model == "support" and text
    streamed, _, finish = _stream_text(client.completions.create(
        model="support", prompt="The weather today is", max_tokens=10, temperature=0, stream=True))
    assert streamed == text and finish == full.choices[0].finish_reason
    stop = text.strip()[:2]
    cut = client.completions.create(model="support", prompt="The weather today is", max_tokens=10,
                                    temperature=0, stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"
    for stop_at in (stop, text[len(text) // 2:len(text) // 2 + 3]):  # a stop string across tokens too
        if not stop_at.strip():
            continue
        whole = client.completions.create(model="support", prompt="The weather today is", max_tokens=10,
                                          temperature=0, stop=[stop_at, "zzzz-never"]).choices[0]
        streamed, _, finish = _stream_text(client.completions.create(
            model="support", prompt="The weather today is", max_tokens=10, temperature=0,
            stop=[stop_at, "zzzz-never"], stream=True))
        assert streamed == whole.text == text[:text.index(stop_at)] and finish == whole.finish_reason == "stop"
    # sampling with a seed is reproducible
    a, b = (client.completions.create(model="support", prompt="Hi", max_tokens=8, temperature=1.0,
                                      seed=7).choices[0].text for _ in range(2))
    assert a == b


def test_authentication_and_cross_tenant_isolation(served):
    from openai import OpenAI

    for bad in ("", "sk-nope", served.keys["acme"][:-2] + "xx"):
        with pytest.raises(openai.AuthenticationError) as exc:
            OpenAI(base_url=served.base_url, api_key=bad or "x", max_retries=0).models.list()
        assert exc.value.status_code == 401 and exc.value.body["code"] in ("invalid_api_key",)
    with served.http() as http:  # no header at all
        r = http.get("/v1/models")
        assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    globex = served.client("globex")
    messages = {}
    for name in ("billing", "acme--billing", "acme--support", "does-not-exist"):
        with pytest.raises(openai.NotFoundError) as exc:
            _chat(globex, name)
        assert exc.value.body["code"] == "model_not_found"
        messages[name] = exc.value.body["message"].replace(name, "NAME")
    assert len(set(messages.values())) == 1, "a foreign model must look exactly like a missing one"


def test_admin_endpoints_need_an_admin_key(served):
    with served.http("acme") as http:
        for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/adapters"),
                             ("POST", "/admin/adapters"), ("DELETE", "/admin/adapters/acme/support"),
                             ("POST", "/admin/reload"), ("GET", "/metrics")):
            r = http.request(method, path, json={})
            assert r.status_code == 403, (method, path)
            assert r.json()["error"]["type"] == "permission_error"
    with served.http("admin") as admin:
        created = admin.post("/admin/keys", json={"tenant": "acme", "name": "ephemeral"})
        assert created.status_code == 201
        token = created.json()["key"]
        assert "key" not in admin.get("/admin/keys", params={"tenant": "acme"}).json()["data"][0]
        from openai import OpenAI

        client = OpenAI(base_url=served.base_url, api_key=token, max_retries=0)
        assert "support" in [m.id for m in client.models.list()]
        assert admin.delete(f"/admin/keys/{created.json()['key_id']}").status_code == 200
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    # the audit log has who did what with which key — ids only, never a secret — and verifies
    from engine.privacy import audit
    from engine.workspace import Workspace

    ws = Workspace(served.registry_path.parent)
    log_text = audit.log_path(ws).read_text()
    assert token not in log_text and token.rsplit("-", 1)[1] not in log_text
    entries = [json.loads(line) for line in log_text.splitlines()]
    new_id = created.json()["key_id"]
    actions = {(e["action"], e["ids"].get("created_key_id") or e["ids"].get("revoked_key_id")
                or e["ids"].get("key_id")) for e in entries}
    assert ("keys.create", new_id) in actions and ("keys.revoke", new_id) in actions
    assert ("serve.key_use", new_id) in actions  # the new key's first use today
    assert all(e["actor"].startswith("key:") for e in entries if e["action"].startswith("keys."))
    assert audit.verify(ws).ok


def test_adapters_load_and_unload_at_runtime(served):
    acme = served.client("acme")
    reference = _chat(served.client("globex"), "support").choices[0].message.content  # adapter a2
    with served.http("admin") as admin:
        r = admin.post("/admin/adapters", json={"tenant": "acme", "name": "hotswap",
                                                "adapter_path": str(served.adapters["a2"])})
        assert r.status_code == 201, r.text
        assert "hotswap" in [m.id for m in acme.models.list()]
        assert _chat(acme, "hotswap").choices[0].message.content == reference
        assert admin.post("/admin/adapters", json={"tenant": "acme", "name": "hotswap",
                                                   "adapter_path": str(served.adapters["a2"])}
                          ).status_code == 409
        assert admin.delete("/admin/adapters/acme/hotswap").status_code == 200
        assert admin.delete("/admin/adapters/acme/hotswap").status_code == 404
        bad = admin.post("/admin/adapters", json={"tenant": "acme", "name": "broken",
                                                  "adapter_path": str(served.registry_path.parent)})
        assert bad.status_code == 400
    assert "hotswap" not in [m.id for m in acme.models.list()]
    with pytest.raises(openai.NotFoundError):
        _chat(acme, "hotswap")
    assert _chat(served.client("globex"), "support").choices[0].message.content == reference


def test_promotions_are_picked_up_while_running(served):
    from engine.registry import now_iso

    table = ServedModels(served.registry_path)
    table.upsert({"tenant": "globex", "name": "fresh", "run_id": "run-x",
                  "adapter_path": str(served.adapters["a1"]), "base_model": served.base_model,
                  "promoted_at": now_iso(), "demoted_at": None, "forced": 0})
    globex = served.client("globex")
    assert wait_until(lambda: "fresh" in [m.id for m in globex.models.list()])
    assert _chat(globex, "fresh").choices[0].message.content == \
        _chat(served.client("acme"), "support").choices[0].message.content  # both adapter a1
    table.demote("globex", "fresh")
    assert wait_until(lambda: "fresh" not in [m.id for m in globex.models.list()])


def test_bad_requests_are_openai_errors(served):
    with served.http("acme") as http:
        r = http.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        secret = "PROMPT-SECRET-4711"
        r = http.post("/v1/chat/completions", json={"model": "support", "temperature": 9,
                                                    "messages": [{"role": "user", "content": secret}]})
        body = r.json()["error"]
        assert r.status_code == 400 and body["param"] == "temperature" and secret not in r.text
        r = http.post("/v1/chat/completions", json={"model": "support", "max_tokens": 10_000,
                                                    "messages": MSGS})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        r = http.post("/v1/chat/completions", json={"model": "support", "messages": [{"content": "x"}]})
        assert r.status_code == 400 and secret not in r.text
        r = http.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    with served.http() as http:
        assert http.get("/health").json()["status"] == "ok"


def _usage(registry_path, tenant):
    """(requests, prompt tokens, completion tokens, errors) per model, summed over the UTC days
    (requests on both sides of midnight UTC make two rows)."""
    with sqlite3.connect(registry_path) as db:
        rows = db.execute("SELECT model, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), "
                          "SUM(errors) FROM usage WHERE tenant=? GROUP BY model", (tenant,)).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_usage_is_exact_under_concurrency_and_metrics_have_labels(served):
    with served.http("admin") as admin:
        assert admin.post("/admin/adapters", json={"tenant": "load", "name": "lora",
                                                   "adapter_path": str(served.adapters["a1"])}
                          ).status_code == 201
    client = served.client("load")
    batches_before = getattr(served.backend, "batches", None)
    n = 24
    barrier = threading.Barrier(8)
    lock = threading.Lock()
    seen = {}

    def one(i):
        if i < 8:
            barrier.wait()  # the first eight start together, so the backend can batch them
        model = "lora" if i % 2 else served.base_model
        if i % 3 == 0:
            _, usage, _ = _stream_text(_chat(client, model, stream=True, max_tokens=4 + i % 5,
                                             stream_options={"include_usage": True}))
        else:
            usage = _chat(client, model, max_tokens=4 + i % 5).usage
        with lock:
            req, p, c, e = seen.get(model, (0, 0, 0, 0))
            seen[model] = (req + 1, p + usage.prompt_tokens, c + usage.completion_tokens, e)

    def failing(_):
        with pytest.raises(openai.BadRequestError):
            _chat(client, "lora", max_tokens=10_000)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(n)))
        list(pool.map(failing, range(3)))
    req, p, c, e = seen["lora"]
    seen["lora"] = (req + 3, p, c, 3)
    # usage is written in batches right after the responses (group commit), not before them
    expected = {k: tuple(v) for k, v in seen.items()}
    assert wait_until(lambda: _usage(served.registry_path, "load") == expected, timeout=10), \
        (_usage(served.registry_path, "load"), expected)
    if batches_before is not None:  # in-process backend: concurrent requests shared batches
        assert served.backend.batches - batches_before < n
    with served.http("admin") as admin:
        text = admin.get("/metrics").text
        assert admin.delete("/admin/adapters/load/lora").status_code == 200
    line = 'studio_requests_total{adapter="_load__lora",model="lora",tenant="load"}'
    assert f"{line} {float(seen['lora'][0])}" in text
    assert f'studio_request_errors_total{{adapter="_load__lora",code="invalid_value",model="lora",' \
           f'tenant="load"}} 3.0' in text
    assert f'studio_completion_tokens_total{{adapter="base",model="{served.base_model}",tenant="load"}} ' \
           f'{float(seen[served.base_model][2])}' in text
    assert "studio_request_latency_seconds_bucket" in text
    # product metrics (engine/metrics.py) from the usage table, per month the gateway recorded (UTC);
    # not the test's own clock, which may already be in the next month
    with sqlite3.connect(served.registry_path) as db:
        months = db.execute("SELECT substr(day, 1, 7), SUM(requests) FROM usage WHERE tenant='load' "
                            "AND model=? GROUP BY 1", (served.base_model,)).fetchall()
    assert months and sum(n for _, n in months) == seen[served.base_model][0]
    for month, requests in months:
        assert f'studio_inferences{{model="{served.base_model}",month="{month}",tenant="load"}} ' \
               f'{float(requests)}' in text


def test_served_output_equals_the_eval_output(served):
    """What `studio eval` scored is what the gateway serves: same template, same greedy tokens."""
    from engine.generation.transformers_backend import TransformersBackend

    model_dir = served.registry_path.parent / "models" / served.base_model
    prompts = [MSGS, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my order?"}]]
    for model, adapter in ((served.base_model, None), ("support", served.adapters["a1"])):
        expected = TransformersBackend(model_dir, adapter, threads=1).generate(prompts, max_new_tokens=12,
                                                                              batch_size=2)
        client = served.client("acme")
        got = [client.chat.completions.create(model=model, messages=p, max_tokens=12, temperature=0)
               .choices[0].message.content.strip() for p in prompts]
        assert got == expected


def test_a_client_that_disconnects_mid_stream_is_counted_as_an_error(served):
    import json as _json

    if getattr(served.backend, "kind", None) == "vllm":
        pytest.skip("vLLM writes the tiny model's whole answer (<= 64 tokens) before a client can "
                    "hang up, so there is no mid-stream disconnect to observe")

    client = served.http("globex")
    body = {"model": "support", "stream": True, "max_tokens": 64, "temperature": 0, "messages": MSGS}
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and _json.loads(line[6:])["choices"]:
                break  # one chunk, then hang up
    client.close()

    def disconnected():
        with served.http("admin") as admin:
            return 'code="client_disconnected",model="support",tenant="globex"' in admin.get("/metrics").text
    assert wait_until(disconnected)
    # the backend keeps serving after the abandoned request
    assert _chat(served.client("globex"), "support").choices[0].finish_reason in ("stop", "length")


def test_batched_requests_answer_like_single_ones(served):
    """Left-padded batches must not change a greedy answer (prompts of different lengths)."""
    client = served.client("acme")
    prompts = [[{"role": "user", "content": "Hi"}],
               [{"role": "user", "content": "My order #4711 never arrived and I want a refund today."}],
               [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Reset password?"}],
               [{"role": "user", "content": "The weather today is sunny with a light breeze from the west."}]]

    def ask(p):
        return client.chat.completions.create(model="support", messages=p, max_tokens=10,
                                              temperature=0).choices[0].message.content

    alone = [ask(p) for p in prompts]
    batches_before = getattr(served.backend, "batches", None)
    barrier = threading.Barrier(len(prompts))

    def together(p):
        barrier.wait()
        return ask(p)

    with ThreadPoolExecutor(len(prompts)) as pool:
        batched = list(pool.map(together, prompts))
    assert batched == alone
    if batches_before is not None:
        assert served.backend.batches - batches_before < len(prompts)


def test_200_concurrent_streams_no_errors_and_usage_equals_client_sums(served):
    """200 streaming requests in flight at once (four tenants, 50 each — under the per-tenant
    limit): every one completes, and the usage table grew by exactly what the clients were told."""
    tenants = {"acme": "support", "globex": "support", "load": served.base_model, "admin": served.base_model}
    owner = {"acme": "acme", "globex": "globex", "load": "load", "admin": "ops"}
    # earlier tests' counts may still be on their way to the table (batched writes)
    before = settled(lambda: {owner[w]: _usage(served.registry_path, owner[w]) for w in tenants})
    clients = {who: served.client(who) for who in tenants}
    barrier = threading.Barrier(200)
    lock = threading.Lock()
    sums: dict[tuple[str, str], list[int]] = {}
    errors: list[str] = []

    def one(i):
        who = list(tenants)[i % 4]
        model = tenants[who]
        barrier.wait()
        try:
            text, usage, finish = _stream_text(_chat(clients[who], model, stream=True,
                                                     max_tokens=4 + i % 7,
                                                     stream_options={"include_usage": True}))
        except Exception as exc:  # collected: the assertion below reports them
            with lock:
                errors.append(type(exc).__name__)
            return
        with lock:
            row = sums.setdefault((owner[who], model), [0, 0, 0])
            row[0] += 1
            row[1] += usage.prompt_tokens
            row[2] += usage.completion_tokens

    with ThreadPoolExecutor(max_workers=200) as pool:
        list(pool.map(one, range(200)))
    assert errors == []
    assert sum(r[0] for r in sums.values()) == 200
    for (tenant, model), (req, prompt, completion) in sums.items():
        b = before[tenant].get(model, (0, 0, 0, 0))

        def grown(tenant: str = tenant, model: str = model, b: tuple = b) -> tuple[int, ...]:
            after = _usage(served.registry_path, tenant).get(model, b)
            return tuple(x - y for x, y in zip(after, b))

        assert wait_until(lambda: grown() == (req, prompt, completion, 0), timeout=10), \
            (tenant, model, grown())


def test_killed_vllm_is_reported_unhealthy_restarted_and_serves_again(served):
    """Kill vLLM (the whole process group, as an OOM kill would) while the gateway runs: /health
    turns 503, the supervisor relaunches it with the tenants' adapters, and answers come back."""
    import os
    import signal

    if getattr(served.backend, "kind", None) != "vllm":
        pytest.skip("the in-process transformers backend has no server process to kill")
    expected = _chat(served.client("acme"), "support").choices[0].message.content
    old = served.backend.pgid
    os.killpg(old, signal.SIGKILL)
    with served.http() as http:
        assert wait_until(lambda: http.get("/health").status_code == 503, timeout=30)
        assert wait_until(lambda: http.get("/health").status_code == 200, timeout=300)
    assert served.backend.pgid != old
    assert _chat(served.client("acme"), "support").choices[0].message.content == expected
