"""A supervised vLLM OpenAI server: launches, health-checks, restarts and stops it (serving and eval).

vLLM runs as a child process from its own interpreter (engine/generation/vllm_env.py), in its own
process group, on a free loopback port, offline, with every cache inside the directory the caller
passes (the tenant's tmp), request logging off (its log holds no prompts), LoRA enabled. Its
environment loads the egress guard (engine/privacy/childguard/ on PYTHONPATH, nothing else of the
engine's), and it requires an API key drawn at random for each start and passed in its environment
(VLLM_API_KEY: not in its command line, which other local users can read): only this backend
knows it. vLLM checks it on /v1/* (chat, completions, models, runtime LoRA loading), and the gate
middleware (engine/generation/vllm_gate/) on every other path but /health. `extra_args` may not touch the address, key, origins, served models or request logging. The base
model is served under `base_id`; adapters under their internal ids, given at launch
(`--lora-modules`) or loaded/unloaded at runtime through vLLM's `/v1/load_lora_adapter` and
`/v1/unload_lora_adapter`. A supervisor task restarts the server when it dies and launches it with
the adapters loaded at that moment. Requests are OpenAI bodies passed through with httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from engine.generation.serving import Backend, BackendError
from engine.config.serve import reserved_vllm_args
from engine.errors import StudioError
from engine.generation.vllm_errors import stream_error, upstream_error
from engine.generation.vllm_env import VLLMInstall, cpu_unsupported, for_vllm, require_vllm
from engine.models.loading import check_adapter
from engine.offline import CACHE_ENV_SUBDIRS, CHILD_GUARD_DIR, OFFLINE_ENV

log = logging.getLogger("studio.serve.vllm")

LOOPBACK = "127.0.0.1"
GATE_DIR = Path(__file__).resolve().parent / "vllm_gate"   # the child's key middleware
GATE_MIDDLEWARE = "studio_vllm_gate.RequireKey"
LOG_TAIL_CHARS = 4000


class VLLMStartError(BackendError):
    """vLLM did not become healthy; the message ends with the tail of its log."""

    def __init__(self, message: str):
        super().__init__(message, status=503, code="backend_unavailable")


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's group reused the id
        return False
    return True


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class VLLMBackend(Backend):
    """One base model plus LoRA adapters served by a supervised vLLM OpenAI server."""

    kind = "vllm"

    def __init__(self, model_dir: str | os.PathLike[str], *, base_id: str,
                 cache_dir: str | os.PathLike[str], adapters: dict[str, Path] | None = None,
                 python: str | None = None, max_model_len: int | None = None,
                 dtype: str = "auto", gpu_memory_utilization: float | None = None,
                 extra_args: list[str] | None = None, max_loras: int = 4, max_lora_rank: int = 64,
                 port: int | None = None, startup_timeout: float = 600.0,
                 request_timeout: float = 600.0, restart: bool = True, max_restarts: int = 5,
                 restart_window: float = 600.0, cpu_kvcache_gb: float = 2.0,
                 health_interval: float = 10.0, health_failures: int = 3):
        self.model_dir = Path(model_dir)
        self._base_id = base_id
        self.cache_dir = Path(cache_dir)
        self._adapters: dict[str, Path] = {k: Path(v) for k, v in (adapters or {}).items()}
        self.python = python
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.gpu_memory_utilization = gpu_memory_utilization
        self.extra_args = list(extra_args or [])
        reserved = reserved_vllm_args(self.extra_args)
        if reserved:
            raise StudioError(f"{', '.join(reserved)} may not be set in extra_args",
                              where="vllm.extra_args", hint="the engine sets the vLLM server's "
                              "address, API key, origins, served models and logging itself")
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.port = port
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.restart = restart
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.cpu_kvcache_gb = cpu_kvcache_gb
        self.health_interval = health_interval     # seconds between the supervisor's health checks
        self.health_failures = health_failures     # failed checks in a row that mean "hung"
        self.install: VLLMInstall | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._short_rpc_dir: Path | None = None  # see _rpc_dir
        self.restarts = 0                      # restarts done since start()
        self.startup_seconds: float | None = None   # the last launch's time to healthy
        self._restart_times: list[float] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()            # serialises adapter changes (and the first launch)
        self._stopping = False
        self._failed: str | None = None
        self._launches = 0
        self.owns_cache_dir = False            # True: stop() removes cache_dir (a private temp dir)
        self._api_key = secrets.token_urlsafe(32)  # vLLM's key; a new one at every start()

    # -------------------------------------------------------------------------------- properties

    @property
    def base_id(self) -> str:
        return self._base_id

    def adapters(self) -> dict[str, Path]:
        return dict(self._adapters)

    @property
    def api_key(self) -> str:
        """The key vLLM's server asks for (a new one at every start; benchmarks call it directly)."""
        return self._api_key

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pgid(self) -> int | None:
        """The vLLM process group (= the server's pid); every process it starts is in it."""
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.cache_dir / "vllm-logs" / "server.log"

    # -------------------------------------------------------------------------------- launching

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OFFLINE_ENV)
        for var, sub in CACHE_ENV_SUBDIRS.items():
            path = self.cache_dir / sub
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            env[var] = str(path)
        env.update({
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_HOST_IP": LOOPBACK,
            "VLLM_RPC_BASE_PATH": self._rpc_dir(env["TMPDIR"]),
            "VLLM_LOGGING_LEVEL": "INFO",   # DEBUG would log prompt token ids
            "VLLM_API_KEY": self._api_key,
            "PYTHONUNBUFFERED": "1",
            # the egress guard's sitecustomize and the key middleware, nothing else: the engine's
            # own path must not shadow vLLM's packages
            "PYTHONPATH": os.pathsep.join([str(CHILD_GUARD_DIR), str(GATE_DIR)]),
            "STUDIO_EGRESS_GUARD": "1",
        })
        if self.install is not None and self.install.device == "cpu":
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.cpu_kvcache_gb:g}")
        return env

    def _rpc_dir(self, tmpdir: str) -> str:
        """Where vLLM puts its ZeroMQ IPC sockets: the job's TMPDIR, unless that path is so long
        that `<dir>/<uuid>` would exceed the 107-byte limit of a Unix socket path (a deep workspace
        path) — then a short private directory under the system temp dir, removed at stop().
        Sockets hold no data at rest."""
        if len(tmpdir) + 1 + 36 + 8 < 100:
            return tmpdir
        if self._short_rpc_dir is None:
            self._short_rpc_dir = Path(tempfile.mkdtemp(prefix="vllm-", dir="/tmp"))
        return str(self._short_rpc_dir)

    def _dtype(self) -> str:
        if self.dtype == "auto" and self.install is not None and self.install.device == "cpu":
            return "float32"   # bf16 on CPUs without AVX-512 BF16 is slow or unsupported
        return self.dtype

    def argv(self, model_path: Path) -> list[str]:
        """The command line that launches vLLM's OpenAI server (no prompt logging)."""
        assert self.install is not None and self.port is not None
        args = [str(self.install.python), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(model_path), "--served-model-name", self._base_id,
                "--host", LOOPBACK, "--port", str(self.port), "--dtype", self._dtype(),
                "--enable-lora", "--max-loras", str(self.max_loras),
                "--max-lora-rank", str(self.max_lora_rank),
                # request/output logging off: vLLM's log then holds no prompt or completion text
                "--no-enable-log-requests", "--no-enable-log-outputs",
                "--disable-uvicorn-access-log", "--generation-config", "auto",
                "--middleware", GATE_MIDDLEWARE]   # the key on every path but /health
        if self.max_model_len:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.gpu_memory_utilization is not None:
            args += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self._adapters:
            args += ["--lora-modules", *(f"{k}={v}" for k, v in self._adapters.items())]
        return args + self.extra_args

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - chars))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    async def _launch(self) -> None:
        """Start the server and wait until /health answers; VLLMStartError otherwise."""
        assert self.install is not None
        model_path = for_vllm(self.model_dir, self.cache_dir)
        if self.port is None:
            self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._launches += 1
        argv = self.argv(model_path)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n=== launch {self._launches} port {self.port} ===\n".encode())
            logf.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf,
                env=self._env(), cwd=str(self.cache_dir), start_new_session=True)
        log.info("vllm launched: pid %s port %s adapters %d", self.proc.pid, self.port,
                 len(self._adapters))
        deadline = t0 + self.startup_timeout
        assert self._client is not None
        while True:
            if self.proc.returncode is not None:
                code = self.proc.returncode
                self._reap_group()
                raise VLLMStartError(f"vLLM exited with code {code} during start-up "
                                     f"(log: {self.log_path}); last lines:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                await self._terminate()
                raise VLLMStartError(f"vLLM was not healthy after {self.startup_timeout:.0f} s "
                                     f"(log: {self.log_path}); last lines:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                r = await self._client.get("/health", timeout=5.0)
                if r.status_code == 200:
                    break
            await asyncio.sleep(0.5)
        self.startup_seconds = time.monotonic() - t0
        log.info("vllm healthy after %.1f s", self.startup_seconds)

    def _reap_group(self) -> None:
        """SIGKILL whatever is left in the server's process group (workers of a dead server)."""
        if self.pgid is not None:
            _kill_group(self.pgid, signal.SIGKILL)

    async def _terminate(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL after `grace` seconds; reaps the server."""
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid
        if proc.returncode is None:
            _kill_group(pgid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except asyncio.TimeoutError:
                _kill_group(pgid, signal.SIGKILL)
                await proc.wait()
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        _kill_group(pgid, signal.SIGKILL)
        while _group_alive(pgid) and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.05)

    async def start(self) -> None:
        if self._supervisor is not None and not self._supervisor.done():
            return
        self.install = require_vllm(self.python)
        if self.install.device == "cpu":
            problem = cpu_unsupported(self.model_dir)
            if problem:
                raise BackendError(f"{self.model_dir}: {problem}; serve it with the transformers "
                                   "backend or on a GPU", status=503, code="backend_unavailable")
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in self._adapters.values():
            self._check_adapter(path)
        self._stopping, self._failed = False, None
        self.restarts, self._restart_times = 0, []
        if self._client is None:
            self.port = self.port or free_port()
            self._api_key = secrets.token_urlsafe(32)
            self._client = httpx.AsyncClient(base_url=self.base_url, trust_env=False,
                                             timeout=httpx.Timeout(self.request_timeout),
                                             headers={"Authorization": f"Bearer {self._api_key}"})
        async with self._lock:
            try:
                await self._launch()
            except BaseException:
                await self._terminate(grace=5.0)
                await self._close_client()
                raise
            self._ready.set()
        self._supervisor = asyncio.create_task(self._supervise(), name="vllm-supervisor")

    async def _watch(self, proc: asyncio.subprocess.Process) -> int:
        """Wait for `proc` to exit; a server that fails `health_failures` health checks in a row
        (hung, or its engine dead) is SIGKILLed with its group, so it exits too."""
        failures = 0
        waiter = asyncio.ensure_future(proc.wait())
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=self.health_interval)
                if done:
                    return waiter.result()
                assert self._client is not None
                try:
                    r = await self._client.get("/health", timeout=self.health_interval)
                    healthy = r.status_code == 200
                except httpx.HTTPError:
                    healthy = False
                failures = 0 if healthy else failures + 1
                if failures >= self.health_failures and proc.returncode is None:
                    log.warning("vllm failed %d health checks in a row; killing it", failures)
                    _kill_group(proc.pid, signal.SIGKILL)
        finally:
            waiter.cancel()

    async def _supervise(self) -> None:
        """Wait for the server to exit (or hang); unless stopping, relaunch it (bounded restarts)."""
        while not self._stopping:
            proc = self.proc
            assert proc is not None
            code = await self._watch(proc)
            if self._stopping:
                return
            self._ready.clear()
            log.warning("vllm exited unexpectedly (code %s); restarting", code)
            self._reap_group()
            now = time.monotonic()
            self._restart_times = [t for t in self._restart_times if now - t < self.restart_window]
            if not self.restart or len(self._restart_times) >= self.max_restarts:
                self._failed = (f"vLLM exited with code {code} and was not restarted "
                                f"({len(self._restart_times)} restarts in the last "
                                f"{self.restart_window:.0f} s); log: {self.log_path}")
                log.error("%s", self._failed)
                return
            self._restart_times.append(now)
            # No adapter lock here: adapter calls wait in wait_ready() until this launch is done,
            # and the launch passes every adapter loaded so far as --lora-modules.
            try:
                await self._launch()
            except VLLMStartError as exc:
                self._failed = str(exc)
                log.error("vllm restart failed; log: %s", self.log_path)
                return
            self.restarts += 1
            self._ready.set()

    async def _close_client(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def stop(self) -> None:
        self._stopping = True
        self._ready.clear()
        sup, self._supervisor = self._supervisor, None
        if sup is not None:           # first, so that no relaunch starts while we terminate
            sup.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sup
        await self._terminate()
        await self._close_client()
        if self.owns_cache_dir:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        if self._short_rpc_dir is not None:
            shutil.rmtree(self._short_rpc_dir, ignore_errors=True)
            self._short_rpc_dir = None

    async def health(self) -> bool:
        if self._client is None or self.proc is None or self.proc.returncode is not None:
            return False
        if not self._ready.is_set():
            return False
        try:
            r = await self._client.get("/health", timeout=5.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait while a restart is in progress; BackendError(503) if the server is gone."""
        if self._failed:
            raise BackendError(self._failed, status=503, code="backend_unavailable")
        if self._client is None or self._stopping:
            raise BackendError("the vLLM backend is not running", status=503,
                               code="backend_unavailable")
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), timeout or self.startup_timeout)
            except asyncio.TimeoutError:
                raise BackendError("vLLM is restarting; try again", status=503,
                                   code="backend_unavailable") from None
            if self._failed:
                raise BackendError(self._failed, status=503, code="backend_unavailable")

    # -------------------------------------------------------------------------------- adapters

    def _check_adapter(self, path: Path) -> None:
        try:
            check_adapter(path)   # safetensors only: a pickle adapter can run code when loaded
        except StudioError as exc:
            raise BackendError(f"{exc.what}: only safetensors adapters are served", status=400,
                               code="bad_adapter") from None
        cfg_path = Path(path) / "adapter_config.json"
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackendError(f"not a LoRA adapter directory (no readable adapter_config.json): "
                               f"{path}", status=400, code="bad_adapter") from exc
        rank = max([int(cfg.get("r", 0) or 0)]
                   + [int(v) for v in (cfg.get("rank_pattern") or {}).values()])
        if rank > self.max_lora_rank:
            raise BackendError(f"adapter rank {rank} exceeds max_lora_rank {self.max_lora_rank} "
                               f"({path}); raise vllm extra_args/max_lora_rank", status=400,
                               code="bad_adapter")

    async def _post_admin(self, route: str, payload: dict[str, Any]) -> None:
        await self.wait_ready()
        assert self._client is not None
        try:
            r = await self._client.post(route, json=payload)
        except httpx.HTTPError as exc:
            raise BackendError(f"vLLM unreachable: {type(exc).__name__}", status=503,
                               code="backend_unavailable") from exc
        if r.status_code >= 400:
            raise BackendError(f"vLLM {route} failed: {upstream_error(r)}",
                               status=r.status_code, code="adapter_error")

    async def load_adapter(self, internal_id: str, path: Path) -> None:
        path = Path(path)
        self._check_adapter(path)
        async with self._lock:
            current = self._adapters.get(internal_id)
            if current is not None and current.resolve() == path.resolve():
                return
            if current is not None:
                await self._post_admin("/v1/unload_lora_adapter", {"lora_name": internal_id})
                del self._adapters[internal_id]
            await self._post_admin("/v1/load_lora_adapter",
                                   {"lora_name": internal_id, "lora_path": str(path)})
            self._adapters[internal_id] = path

    async def unload_adapter(self, internal_id: str) -> None:
        async with self._lock:
            if internal_id not in self._adapters:
                raise BackendError(f"no adapter {internal_id!r} is loaded", status=404,
                                   code="adapter_not_found")
            await self._post_admin("/v1/unload_lora_adapter", {"lora_name": internal_id})
            del self._adapters[internal_id]

    # -------------------------------------------------------------------------------- requests

    def _body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        out = dict(body)    # cache_salt and every other OpenAI/vLLM field pass through unchanged
        out.setdefault("model", self._base_id)
        out["stream"] = stream
        if stream:  # usage on every chunk: a stream that ends early is still billed what it generated
            opts = dict(out.get("stream_options") or {})
            opts["include_usage"] = True
            opts["continuous_usage_stats"] = True
            out["stream_options"] = opts
        return out

    async def _request(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        await self.wait_ready()
        assert self._client is not None
        try:
            r = await self._client.post(route, json=self._body(body, stream=False))
        except httpx.HTTPError as exc:
            raise BackendError(f"vLLM request failed: {type(exc).__name__}", status=502) from exc
        if r.status_code >= 400:
            raise BackendError(upstream_error(r), status=r.status_code, code="upstream_error")
        return r.json()

    async def _events(self, route: str, body: dict[str, Any]) -> AsyncIterator[str]:
        """vLLM's SSE payloads as they arrive (JSON text; decoded only to raise an error chunk)."""
        await self.wait_ready()
        assert self._client is not None
        try:
            async with self._client.stream("POST", route, json=self._body(body, stream=True)) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise BackendError(upstream_error(r), status=r.status_code,
                                       code="upstream_error")
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    if '"error"' in data and '"choices"' not in data:
                        raise stream_error(json.loads(data))
                    yield data
        except httpx.HTTPError as exc:
            raise BackendError(f"vLLM stream failed: {type(exc).__name__}", status=502) from exc

    async def _stream(self, route: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for data in self._events(route, body):
            yield json.loads(data)

    def events(self, kind: str, body: dict[str, Any]) -> AsyncIterator[str]:
        """vLLM's own chunk texts, passed through (engine/serve/sse.py edits them)."""
        if kind == "chat":
            return self._events("/v1/chat/completions", body)
        self._check_prompt_logprobs(body)
        return self._events("/v1/completions", body)

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("/v1/chat/completions", body)

    def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/v1/chat/completions", body)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_prompt_logprobs(body)
        return await self._request("/v1/completions", body)

    def _check_prompt_logprobs(self, body: dict[str, Any]) -> None:
        """vLLM's CPU build kills its engine — every tenant's requests with it — on prompt
        logprobs in a batch once LoRA is enabled (an einsum shape error in its CPU LoRA logits
        path; seen with vLLM 0.32 on CPU, for adapters and the base model alike): refuse them there,
        before they reach it. On CUDA they pass through."""
        on_cpu = self.install is not None and self.install.device == "cpu"
        if on_cpu and body.get("echo") and body.get("logprobs") is not None:
            raise BackendError("'echo' with 'logprobs' (prompt log-probabilities) is not supported "
                               "by vLLM on CPU; serve with backend: transformers, or vLLM on a GPU",
                               400, "unsupported_parameter")

    def complete_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self._check_prompt_logprobs(body)
        return self._stream("/v1/completions", body)

    async def models(self) -> list[str]:
        """The ids vLLM serves now (base id and adapter ids), from its /v1/models."""
        await self.wait_ready()
        assert self._client is not None
        r = await self._client.get("/v1/models")
        r.raise_for_status()
        return [m["id"] for m in r.json().get("data", [])]


def from_serve_spec(spec: Any, model_dir: Path, scratch: Path | None = None) -> VLLMBackend:
    """The backend for a serve config (`backend: vllm`): base id = `spec.base_model`, options from
    its `vllm:` block; caches under `scratch` (the tenant's job tmp), else a private temp dir that
    `stop()` removes."""
    v = spec.vllm
    cache_dir, owned = (Path(scratch), False) if scratch is not None else \
        (Path(tempfile.mkdtemp(prefix="studio-vllm-")), True)
    backend = VLLMBackend(
        model_dir, base_id=spec.base_model, cache_dir=cache_dir, python=v.python,
        max_model_len=v.max_model_len, dtype=v.dtype,
        gpu_memory_utilization=v.gpu_memory_utilization, extra_args=list(v.extra_args),
        max_loras=getattr(v, "max_loras", 4), max_lora_rank=getattr(v, "max_lora_rank", 64),
        startup_timeout=getattr(v, "startup_timeout_s", 600.0))
    backend.owns_cache_dir = owned
    return backend
