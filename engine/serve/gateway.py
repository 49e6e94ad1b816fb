"""The serving gateway: an OpenAI-compatible FastAPI app in front of one backend, with keys, tenants, usage and metrics.

Tenants see model names (`support-bot`); the backend sees internal ids (engine/serve/routes.py:
an injective id per (tenant, name), or the base model's store name). A tenant key lists and calls only its tenant's models (and the base
model when `serve.expose_base`); any other name answers 404 "model not found", so names do not
leak across tenants. Admin keys manage keys and adapters. Promoted models (the `served_models`
table) are loaded at start and re-read every `serve.reload_interval_s` seconds.

Nothing here logs or stores a prompt or a completion: the access log has method, path and status;
errors name the exception class; usage and metrics are counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.config import ServeSpec
from engine.errors import NotFound, StudioError
from engine.generation.serving import Backend, BackendError
from engine.metrics import StudioCollector
from engine.privacy import audit
from engine.serve.api import ApiError, check_request, model_not_found, parse_json, read_body
from engine.serve.keys import KeyInfo, KeyStore
from engine.serve.metrics import GatewayMetrics
from engine.serve.promote import ServedModels, adapter_dir
from engine.serve.routes import Route, cache_salt, internal_id
from engine.serve.sse import Relay
from engine.serve.usage import UsageStore, today
from engine.workspace import Workspace

log = logging.getLogger("studio.serve")


class Gateway:
    """State behind the app: backend, routes, key store, usage, metrics."""

    def __init__(self, spec: ServeSpec, backend: Backend, registry_path: Path):
        self.spec, self.backend = spec, backend
        self.registry_path = Path(registry_path)
        self.keys = KeyStore(registry_path)
        self.workspace = Workspace(self.registry_path.parent)
        self._key_day: dict[str, str] = {}  # key id -> the UTC day its use was last audited
        self.usage = UsageStore(registry_path)
        self._usage_batch: dict[tuple[str, str, str], list[int]] = {}  # counted, not yet written
        self._usage_due = asyncio.Event()
        self._usage_task: asyncio.Task[None] | None = None
        self.served = ServedModels(registry_path)
        self.metrics = GatewayMetrics()
        self.metrics.registry.register(StudioCollector(self.workspace))  # TTFM, retrain rate, usage
        self.routes: dict[tuple[str, str], Route] = {}
        self.in_flight: dict[str, int] = {}
        self._routes_lock = asyncio.Lock()
        self._reloader: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.totals = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.on_status: Any = None  # called with a status dict every `status_every_s` of activity
        self.status_every_s = 60.0
        self._status_task: asyncio.Task[None] | None = None
        self.bound: tuple[str, int] | None = None  # (host, port) once listening
        self.ready = False

    # ------------------------------------------------------------------------------ routes
    def visible(self, tenant: str) -> list[str]:
        names = sorted(n for (t, n) in self.routes if t == tenant)
        if self.spec.expose_base and self.backend.base_id not in names:
            names.append(self.backend.base_id)
        return names

    def resolve(self, tenant: str, name: Any) -> tuple[str, str]:
        """(internal id, adapter label) of a name the tenant may call, else 404."""
        if isinstance(name, str):
            route = self.routes.get((tenant, name))
            if route is not None:
                return route.internal_id, route.internal_id
            if self.spec.expose_base and name == self.backend.base_id:
                return self.backend.base_id, "base"
        raise model_not_found(name)

    async def _load(self, route: Route) -> None:
        await self.backend.load_adapter(route.internal_id, route.adapter_path)
        self.routes[(route.tenant, route.name)] = route

    async def _unload(self, key: tuple[str, str]) -> None:
        route = self.routes.pop(key)
        try:
            await self.backend.unload_adapter(route.internal_id)
        except BackendError as exc:
            if exc.status != 404:
                raise

    async def sync_promoted(self) -> dict[str, int]:
        """Load new promotions, reload changed ones, unload demoted ones (admin-loaded routes stay)."""
        rows = await asyncio.to_thread(self.served.list)
        want, paths = {}, {}
        failed = 0
        for r in rows:
            if r["base_model"] != self.spec.base_model:
                continue
            key = (r["tenant"], r["name"])
            try:
                paths[key] = (internal_id(*key), adapter_dir(self.workspace, key[0], r["adapter_path"]))
            except StudioError:  # a row no valid id or path can be made for: never served
                failed += 1
                log.warning("cannot serve promoted model %s/%s (invalid name or path)", *key)
                continue
            want[key] = r
        loaded = unloaded = 0
        async with self._routes_lock:
            for key, route in list(self.routes.items()):
                if route.source == "promoted" and (key not in want or route.adapter_path != paths[key][1]):
                    await self._unload(key)
                    unloaded += 1
            for key, row in want.items():
                if key in self.routes:
                    continue
                route = Route(row["tenant"], row["name"], *paths[key], "promoted", row["run_id"])
                try:
                    await self._load(route)
                    loaded += 1
                except BackendError as exc:  # one broken adapter must not stop the others
                    failed += 1
                    log.warning("cannot load promoted model %s/%s (%s)", key[0], key[1], exc.code)
            self.metrics.adapters.set(len(self.backend.adapters()))
        if loaded or unloaded or failed:
            log.info("promotions: %d loaded, %d unloaded, %d failed; %d served", loaded, unloaded,
                     failed, len(self.routes))
        return {"loaded": loaded, "unloaded": unloaded, "failed": failed}

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.reload_interval_s)
            try:
                await self.sync_promoted()
            except Exception as exc:  # keep serving; say what failed, not with which data
                log.warning("re-reading promotions failed (%s)", exc.__class__.__name__)

    def status(self) -> dict[str, Any]:
        return {**self.totals, "in_flight": sum(self.in_flight.values()),
                "adapters": len(self.routes), "tenants": len({t for t, _ in self.routes})}

    async def _status_loop(self) -> None:
        last = dict(self.totals)
        while True:
            await asyncio.sleep(self.status_every_s)
            if self.totals != last:  # quiet while idle
                now = self.status()
                self.on_status({**now, **{f"new_{k}": now[k] - last[k] for k in last}})
                last = dict(self.totals)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()  # benchmarks drive the backend on it directly
        self._usage_task = asyncio.create_task(self._usage_writer(), name="studio-serve-usage")
        await self.backend.start()
        await self.sync_promoted()
        if self.spec.reload_interval_s > 0:
            self._reloader = asyncio.create_task(self._reload_loop(), name="studio-serve-reload")
        if self.on_status is not None:
            self._status_task = asyncio.create_task(self._status_loop(), name="studio-serve-status")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for task in (self._reloader, self._status_task, self._usage_task):
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self.backend.stop()
        finally:
            try:
                await self.flush_usage()
            finally:
                self.usage.close()

    # -------------------------------------------------------------------------------- auth
    async def authenticate(self, request: Request) -> KeyInfo:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>'.", "missing_api_key")
        info = await asyncio.to_thread(self.keys.authenticate, token.strip()) \
            if scheme.lower() == "bearer" else None
        if info is None:
            raise ApiError(401, "Incorrect API key provided.", "invalid_api_key")
        day = datetime.now(timezone.utc).date().isoformat()
        if self._key_day.get(info.key_id) != day:  # key use: once per key and day, never content
            self._key_day[info.key_id] = day
            await self.audit("serve.key_use", info, info.tenant, day=day)
        return info

    async def audit(self, action: str, key: KeyInfo | None, tenant: str | None, **ids: Any) -> None:
        """One audit-log entry (engine/privacy/audit.py) with the key id as actor; ids only."""
        actor = f"key:{key.key_id}" if key is not None else None
        try:
            await asyncio.to_thread(audit.record, self.workspace, action, tenant=tenant, actor=actor,
                                    ids={"key_id": key.key_id if key else None, **ids})
        except OSError as exc:  # a full or read-only disk must not take serving down silently
            log.error("audit log write failed for %s: %s", action, type(exc).__name__)

    async def admin(self, request: Request) -> KeyInfo:
        info = await self.authenticate(request)
        if not info.is_admin:
            raise ApiError(403, "This endpoint needs an admin key.", "admin_only")
        return info

    # --------------------------------------------------------------------------- inference
    def _body_for_backend(self, body: dict[str, Any], internal: str, tenant: str) -> dict[str, Any]:
        out = {k: v for k, v in body.items() if k not in ("stream", "include_usage")}
        out["model"] = internal
        if body["stream"]:
            out["stream"] = True
            out["stream_options"] = {"include_usage": True}
        if self.backend.kind == "vllm":
            out["cache_salt"] = cache_salt(tenant)
        return out

    async def _account(self, tenant: str, name: str, adapter: str, started: float,
                       usage: dict[str, Any] | None, error_code: str | None) -> None:
        prompt = int((usage or {}).get("prompt_tokens") or 0)
        completion = int((usage or {}).get("completion_tokens") or 0)
        self.metrics.observe(tenant, name, adapter, seconds=time.perf_counter() - started,
                             prompt_tokens=prompt, completion_tokens=completion, error_code=error_code)
        for key, value in (("requests", 1), ("errors", error_code is not None),
                           ("prompt_tokens", prompt), ("completion_tokens", completion)):
            self.totals[key] += int(value)
        counts = self._usage_batch.setdefault((tenant, name, today()), [0, 0, 0, 0])
        for i, value in enumerate((1, prompt, completion, error_code is not None)):
            counts[i] += int(value)
        self._usage_due.set()

    async def _usage_writer(self) -> None:
        """Group commit: write what finished since the last write, then wait for more."""
        while True:
            await self._usage_due.wait()
            self._usage_due.clear()
            await self.flush_usage()

    async def flush_usage(self) -> None:
        """Write the counted usage now (one transaction); on failure keep it for the next write."""
        batch, self._usage_batch = self._usage_batch, {}
        if not batch:
            return
        try:
            await asyncio.to_thread(self.usage.add, batch)
        except Exception as exc:  # a full or locked disk: the counts stay in memory, retried
            log.error("usage write failed (%s); %d row(s) kept for the next write",
                      exc.__class__.__name__, len(batch))
            for key, counts in batch.items():
                kept = self._usage_batch.setdefault(key, [0, 0, 0, 0])
                for i, value in enumerate(counts):
                    kept[i] += value
            await asyncio.sleep(1.0)
            self._usage_due.set()

    async def _end_stream(self, chunks: Any, tenant: str, name: str, adapter: str, started: float,
                          usage: dict[str, Any] | None, error: str | None) -> None:
        """Close the backend's stream (a client gone: vLLM stops generating for it) and bill it."""
        try:
            await chunks.aclose()
        except Exception as exc:  # the stream is over either way; billing must still happen
            log.warning("closing a backend stream failed (%s)", exc.__class__.__name__)
        finally:
            await self._account(tenant, name, adapter, started, usage, error)

    def _enter(self, tenant: str) -> None:
        if self.in_flight.get(tenant, 0) >= self.spec.max_concurrent_per_tenant:
            raise ApiError(429, f"Too many concurrent requests for this tenant (limit "
                           f"{self.spec.max_concurrent_per_tenant}); retry later.", "rate_limit_exceeded")
        self.in_flight[tenant] = self.in_flight.get(tenant, 0) + 1
        self.metrics.in_flight.labels(tenant).inc()

    def _leave(self, tenant: str) -> None:
        self.in_flight[tenant] -= 1
        self.metrics.in_flight.labels(tenant).dec()

    async def infer(self, request: Request, kind: str) -> Response:
        started = time.perf_counter()
        key = await self.authenticate(request)
        raw = parse_json(await read_body(request, self.spec.max_request_bytes))
        name = raw.get("model")
        internal, adapter = self.resolve(key.tenant, name)
        tenant = key.tenant
        try:
            body = check_request(raw, kind, default_max_tokens=self.spec.default_max_tokens,
                                 max_tokens_limit=self.spec.max_tokens_limit,
                                 backend=self.backend.kind)
            self._enter(tenant)
        except ApiError as exc:
            await self._account(tenant, name, adapter, started, None, exc.code)
            raise
        backend_body = self._body_for_backend(body, internal, tenant)
        if body["stream"]:
            return await self._stream(kind, backend_body, tenant, name, adapter, started,
                                      body["include_usage"])
        try:
            call = self.backend.chat if kind == "chat" else self.backend.complete
            result = await call(backend_body)
        except BaseException as exc:
            self._leave(tenant)
            await self._account(tenant, name, adapter, started, None, _code(exc))
            raise
        self._leave(tenant)
        result["model"] = name
        await self._account(tenant, name, adapter, started, result.get("usage"), None)
        return JSONResponse(result)

    async def _stream(self, kind: str, body: dict[str, Any], tenant: str, name: str, adapter: str,
                      started: float, include_usage: bool) -> Response:
        relay = Relay(body["model"], name, include_usage)
        try:  # the first chunk before the headers, so an early error is a proper HTTP error
            chunks = self.backend.events(kind, body)
            first = await chunks.__anext__()
        except BaseException as exc:
            self._leave(tenant)
            await self._account(tenant, name, adapter, started, None, _code(exc))
            if isinstance(exc, StopAsyncIteration):
                raise ApiError(500, "the backend returned no output", "backend_error") from None
            raise

        async def events() -> AsyncIterator[str]:
            # every backend chunk carries the usage so far (the last one the final usage): a stream
            # that ends early — the client gone, even between the last token and the usage chunk —
            # is billed the tokens generated until then
            usage: dict[str, Any] | None = None
            error: str | None = "client_disconnected"
            timed = False
            try:
                payload: str | None = first
                while payload is not None:
                    text, seen, has_text = relay.edit(payload)
                    if seen is not None:
                        usage = seen
                    if has_text and not timed:
                        timed = True
                        self.metrics.ttft.labels(tenant, name, adapter).observe(
                            time.perf_counter() - started)
                    if text is not None:
                        yield f"data: {text}\n\n"
                    payload = await chunks.__anext__()
            except StopAsyncIteration:
                error = None
            except BackendError as exc:
                error = exc.code
                yield f"data: {json.dumps(ApiError(exc.status, str(exc), exc.code).body())}\n\n"
            except Exception as exc:
                error = "internal_error"
                log.error("stream failed (%s)", exc.__class__.__name__)
                yield f"data: {json.dumps(ApiError(500, 'internal error', 'internal_error').body())}\n\n"
            finally:
                self._leave(tenant)
                ending = self._end_stream(chunks, tenant, name, adapter, started, usage, error)
                if error == "client_disconnected":  # cancelled: do not await inside the cancel
                    asyncio.get_running_loop().create_task(ending)
                else:
                    await ending
            yield "data: [DONE]\n\n"

        return _ClosingStream(events(), media_type="text/event-stream",
                              headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _ClosingStream(StreamingResponse):
    """A StreamingResponse that closes its generator however the response ends: when the client
    hangs up, Starlette stops iterating and leaves the generator suspended until garbage
    collection, and with it the `finally` that bills the tokens generated so far."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]


def _code(exc: BaseException) -> str:
    if isinstance(exc, (BackendError, )):
        return exc.code
    if isinstance(exc, ApiError):
        return exc.code or "error"
    if isinstance(exc, asyncio.CancelledError):
        return "client_disconnected"
    return "internal_error"


# ------------------------------------------------------------------------------------------ app
def create_app(gateway: Gateway) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops the gateway (and so the backend)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="Expert Studio gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.gateway = gateway
    g = gateway

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(StudioError)
    async def _studio_error(request: Request, exc: StudioError) -> Response:
        # a user mistake in an admin call (a bad tenant name, an unknown key id): no traceback
        message = exc.what + (f" ({exc.hint})" if exc.hint else "")
        if isinstance(exc, NotFound):
            return ApiError(404, message, "not_found").response()
        return ApiError(400, message, "invalid_value").response()

    @app.exception_handler(BackendError)
    async def _backend_error(request: Request, exc: BackendError) -> Response:
        return ApiError(exc.status, str(exc), exc.code).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = "Not found." if exc.status_code == 404 else str(exc.detail)
        return ApiError(exc.status_code, message, "not_found" if exc.status_code == 404 else None
                        ).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed (%s)", request.method, request.url.path, exc.__class__.__name__)
        return ApiError(500, "internal error", "internal_error").response()

    @app.get("/health")
    async def health() -> Response:
        ok = g.ready and await g.backend.health()
        return JSONResponse({"status": "ok" if ok else "unavailable", "backend": g.backend.kind},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if not g.spec.metrics_public:
            await g.admin(request)
        return Response(g.metrics.render(), media_type=g.metrics.content_type)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        key = await g.authenticate(request)
        return JSONResponse({"object": "list", "data": [_model_card(g, key.tenant, n)
                                                        for n in g.visible(key.tenant)]})

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str, request: Request) -> Response:
        key = await g.authenticate(request)
        g.resolve(key.tenant, name)
        return JSONResponse(_model_card(g, key.tenant, name))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await g.infer(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await g.infer(request, "completion")

    # ---------------------------------------------------------------------------- admin
    @app.get("/admin/keys")
    async def keys_list(request: Request) -> Response:
        await g.admin(request)
        tenant = request.query_params.get("tenant")
        rows = await asyncio.to_thread(g.keys.list, tenant)
        return JSONResponse({"data": [_key_dict(k) for k in rows]})

    @app.post("/admin/keys")
    async def keys_create(request: Request) -> Response:
        admin = await g.admin(request)
        body = parse_json(await read_body(request, g.spec.max_request_bytes))
        tenant, name, role = body.get("tenant"), body.get("name", "default"), body.get("role", "tenant")
        if not isinstance(tenant, str) or not isinstance(name, str) or not isinstance(role, str):
            raise ApiError(400, "'tenant', 'name' and 'role' must be strings", "invalid_value")
        token, info = await asyncio.to_thread(g.keys.create, tenant, name, role)
        await g.audit("keys.create", admin, info.tenant, created_key_id=info.key_id, role=info.role)
        return JSONResponse({**_key_dict(info), "key": token}, status_code=201)

    @app.delete("/admin/keys/{key_id}")
    async def keys_revoke(key_id: str, request: Request) -> Response:
        admin = await g.admin(request)
        info = await asyncio.to_thread(g.keys.revoke, key_id)
        await g.audit("keys.revoke", admin, info.tenant, revoked_key_id=info.key_id)
        return JSONResponse(_key_dict(info))

    @app.get("/admin/adapters")
    async def adapters_list(request: Request) -> Response:
        await g.admin(request)
        return JSONResponse({"data": [{"tenant": r.tenant, "name": r.name, "internal_id": r.internal_id,
                                       "source": r.source, "run_id": r.run_id}
                                      for r in g.routes.values()]})

    @app.post("/admin/adapters")
    async def adapters_load(request: Request) -> Response:
        admin = await g.admin(request)
        body = parse_json(await read_body(request, g.spec.max_request_bytes))
        tenant, name, path = body.get("tenant"), body.get("name"), body.get("adapter_path")
        if not all(isinstance(v, str) and v for v in (tenant, name, path)):
            raise ApiError(400, "give 'tenant', 'name' and 'adapter_path'", "invalid_value")
        route = Route(tenant, name, internal_id(tenant, name), Path(path), "admin")
        async with g._routes_lock:
            if (tenant, name) in g.routes:
                raise ApiError(409, f"{tenant}/{name} is already served; unload it first",
                               "already_loaded")
            await g._load(route)
            g.metrics.adapters.set(len(g.backend.adapters()))
        await g.audit("serve.adapter_load", admin, tenant, name=name, internal_id=route.internal_id)
        return JSONResponse({"tenant": tenant, "name": name, "internal_id": route.internal_id},
                            status_code=201)

    @app.delete("/admin/adapters/{tenant}/{name}")
    async def adapters_unload(tenant: str, name: str, request: Request) -> Response:
        admin = await g.admin(request)
        async with g._routes_lock:
            if (tenant, name) not in g.routes:
                raise ApiError(404, "no such adapter is loaded", "not_found")
            await g._unload((tenant, name))
            g.metrics.adapters.set(len(g.backend.adapters()))
        await g.audit("serve.adapter_unload", admin, tenant, name=name)
        return JSONResponse({"tenant": tenant, "name": name, "unloaded": True})

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        await g.admin(request)
        return JSONResponse(await g.sync_promoted())

    return app


def _model_card(g: Gateway, tenant: str, name: str) -> dict[str, Any]:
    route = g.routes.get((tenant, name))
    return {"id": name, "object": "model", "created": 0, "owned_by": tenant if route else "studio",
            "parent": g.backend.base_id if route else None}


def _key_dict(info: KeyInfo) -> dict[str, Any]:
    return {"key_id": info.key_id, "tenant": info.tenant, "name": info.name, "role": info.role,
            "created_at": info.created_at, "revoked_at": info.revoked_at}
