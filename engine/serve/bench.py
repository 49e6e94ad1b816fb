"""Serving benchmark: N concurrent streaming clients against a gateway (and the backend directly); latency and throughput.

Reports per scenario: time to first token (TTFT), inter-token latency (ITL), end-to-end latency
(p50/p95/p99), output tokens/s, requests/s and error rate. Without a URL it builds a tiny model
and a LoRA adapter in a temporary workspace and starts a transformers-backend gateway itself
(offline, standalone), so it can also drive the backend without the gateway: the transformers
backend's object directly (no HTTP), or vLLM's own OpenAI server over HTTP with the same client —
the ratio of the two is the gateway's overhead. Base vs LoRA is the same load on the base model
and on an adapter.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.config import ServeSpec
from engine.console import err
from engine.errors import StudioError
from engine.models.loading import load_causal_lm
from engine.models.store import import_model
from engine.models.tiny import build_tiny_llama
from engine.registry import Registry, now_iso
from engine.serve.keys import KeyStore
from engine.serve.promote import ServedModels
from engine.serve.routes import internal_id
from engine.serve.server import start_in_thread
from engine.workspace import Workspace

_WORDS = ("router", "order", "refund", "password", "invoice", "delivery", "account", "screen",
          "battery", "warranty", "thermostat", "camera", "login", "update", "charger", "speaker")


@dataclass
class BenchOptions:
    concurrency: int = 8
    requests: int = 32
    prompt_words: int = 32
    max_tokens: int = 32
    direct: bool = True
    warmup: int = 8
    client_process: bool = True  # HTTP clients in a child process (not sharing the gateway's GIL)
    seed: int = 0


@dataclass
class _Sample:
    ok: bool
    start: float
    first: float | None = None
    end: float = 0.0
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0


def _prompts(opts: BenchOptions) -> list[list[dict[str, str]]]:
    rng = random.Random(opts.seed)
    return [[{"role": "user", "content": " ".join(rng.choice(_WORDS) for _ in range(opts.prompt_words))}]
            for _ in range(opts.requests)]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarize(name: str, samples: list[_Sample], wall: float,
              cpu_s: float | None = None) -> dict[str, Any]:
    """One scenario's numbers; `cpu_s`: CPU seconds the serving process spent on it."""
    ok = [s for s in samples if s.ok]
    ttft = [s.first - s.start for s in ok if s.first is not None]
    itl = [g for s in ok for g in s.gaps]
    e2e = [s.end - s.start for s in ok]
    tokens = sum(s.tokens for s in ok)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        "scenario": name, "requests": len(samples), "errors": len(samples) - len(ok),
        "error_rate": round((len(samples) - len(ok)) / max(len(samples), 1), 4),
        "wall_s": round(wall, 3), "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
        "requests_per_s": round(len(ok) / wall, 2) if wall > 0 else None,
        **{f"ttft_ms_p{p}": ms(_pct(ttft, p / 100)) for p in (50, 95, 99)},
        **{f"itl_ms_p{p}": ms(_pct(itl, p / 100)) for p in (50, 95, 99)},
        **{f"e2e_ms_p{p}": ms(_pct(e2e, p / 100)) for p in (50, 95, 99)},
        "itl_ms_mean": ms(statistics.fmean(itl)) if itl else None,
        "server_cpu_s": None if cpu_s is None else round(cpu_s, 3),
        "server_cpu_us_per_token": round(cpu_s / tokens * 1e6, 1) if cpu_s is not None and tokens
        else None,
    }


# --------------------------------------------------------------------------------------- drivers
async def _drive(one: Any, prompts: list[list[dict[str, str]]], concurrency: int) -> tuple[list[_Sample], float]:
    sem = asyncio.Semaphore(concurrency)
    samples: list[_Sample] = []

    async def run(messages: list[dict[str, str]]) -> None:
        async with sem:
            sample = _Sample(ok=False, start=time.perf_counter())
            try:
                await one(messages, sample)
                sample.ok = True
            except Exception:
                sample.ok = False
            sample.end = time.perf_counter()
            samples.append(sample)

    t0 = time.perf_counter()
    await asyncio.gather(*(run(m) for m in prompts))
    return samples, time.perf_counter() - t0


def _on_chunk(chunk: dict[str, Any], sample: _Sample, last: list[float]) -> None:
    if chunk.get("usage"):
        sample.tokens = int(chunk["usage"].get("completion_tokens") or 0)
    for choice in chunk.get("choices") or []:
        if (choice.get("delta") or {}).get("content") or choice.get("text"):
            now = time.perf_counter()
            if sample.first is None:
                sample.first = now
            else:
                sample.gaps.append(now - last[0])
            last[0] = now


def _warmup(prompts: list[list[dict[str, str]]], opts: BenchOptions) -> list[list[dict[str, str]]]:
    return prompts[: max(opts.warmup, opts.concurrency)]


async def http_load(url: str, key: str, model: str, prompts: list[list[dict[str, str]]],
                    opts: BenchOptions) -> tuple[list[_Sample], float]:
    """Streaming chat completions over HTTP (SSE), `opts.concurrency` at a time."""
    import httpx

    limits = httpx.Limits(max_connections=opts.concurrency + 4, max_keepalive_connections=opts.concurrency + 4)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=600, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        async def one(messages: list[dict[str, str]], sample: _Sample) -> None:
            body = {"model": model, "messages": messages, "max_tokens": opts.max_tokens,
                    "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
            last = [0.0]
            async with client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise RuntimeError(f"HTTP {resp.status_code}")
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise RuntimeError("stream error")
                    _on_chunk(chunk, sample, last)

        return await _drive(one, prompts, opts.concurrency)


def _http_load_sync(url: str, key: str, model: str, prompts: list[list[dict[str, str]]],
                    opts: BenchOptions) -> tuple[list[_Sample], float]:
    return asyncio.run(http_load(url, key, model, prompts, opts))


async def http_load_in_process(url: str, key: str, model: str, prompts: list[list[dict[str, str]]],
                               opts: BenchOptions) -> tuple[list[_Sample], float]:
    """`http_load` in a child process, so the clients do not share the gateway's interpreter (GIL)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return await asyncio.wrap_future(pool.submit(_http_load_sync, url, key, model, prompts, opts))


async def direct_load(backend: Any, model_id: str, prompts: list[list[dict[str, str]]],
                      opts: BenchOptions) -> tuple[list[_Sample], float]:
    """The same load on the backend object, without HTTP (runs on the gateway's event loop)."""
    async def one(messages: list[dict[str, str]], sample: _Sample) -> None:
        body = {"model": model_id, "messages": messages, "max_tokens": opts.max_tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        last = [0.0]
        async for chunk in backend.chat_stream(body):
            _on_chunk(chunk, sample, last)

    return await _drive(one, prompts, opts.concurrency)


# ------------------------------------------------------------------------------------ self-start
def _self_started(root: Path, model_dir: Path | None = None, threads: int | None = 1,
                  backend: str = "transformers") -> tuple[Any, dict[str, str]]:
    """A model (default: a tiny one), a LoRA adapter (random non-zero B) and a gateway on a free
    loopback port."""
    import torch
    from peft import LoraConfig, get_peft_model

    if threads:
        torch.set_num_threads(threads)
    model_dir = Path(model_dir) if model_dir else build_tiny_llama(root / "tiny-llama", seed=0)
    ws = Workspace(root / "ws").ensure()
    registry = Registry(ws.registry_path)
    import_model(ws, registry, str(model_dir), "tiny")
    peft_model = get_peft_model(load_causal_lm(model_dir, merge=False), LoraConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # small: a real adapter's size of change, so outputs stay text
                param.copy_(torch.randn(param.shape, generator=gen) * 0.01)
    peft_model.save_pretrained(root / "adapter")
    ServedModels(ws.registry_path).upsert({
        "tenant": "bench", "name": "lora", "run_id": "bench", "adapter_path": str(root / "adapter"),
        "base_model": "tiny", "promoted_at": now_iso(), "demoted_at": None, "forced": 1})
    token = KeyStore(ws.registry_path).create("bench", "bench")[0]
    spec = ServeSpec(base_model="tiny", port=0, reload_interval_s=0, max_tokens_limit=4096, threads=threads,
                     max_concurrent_per_tenant=1024, batching={"max_batch_size": 16, "batch_wait_ms": 5},
                     backend=backend, vllm={"dtype": "float32", "max_model_len": _context(model_dir, 2048)})
    running = start_in_thread(spec, ws, registry)
    return running, {"key": token, "base": "tiny", "lora": "lora", "lora_id": internal_id("bench", "lora")}


def _context(model_dir: Path, most: int) -> int:
    """`most` tokens of context, or fewer where the model has fewer positions."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return min(most, int(config.get("max_position_embeddings") or most))


def run_bench(opts: BenchOptions, *, url: str | None = None, key: str | None = None,
              model: str | None = None, lora_model: str | None = None,
              model_dir: Path | None = None, threads: int | None = 1,
              backend: str = "transformers") -> dict[str, Any]:
    """Run every scenario; print a table on stderr; return the report (ratios included)."""
    prompts = _prompts(opts)
    results: list[dict[str, Any]] = []
    running = None
    tmp = tempfile.TemporaryDirectory(prefix="studio-bench-")
    try:
        if url is None:
            running, info = _self_started(Path(tmp.name), model_dir, threads, backend)
            url, key, model, lora_model = f"{running.url}/v1", info["key"], info["base"], info["lora"]
        if not key or not model:
            raise StudioError("--url needs --key and --model", hint="or leave --url out to self-start")
        load = http_load_in_process if opts.client_process else http_load
        # each scenario: make(prompts) -> its samples and wall time
        scenarios: list[tuple[str, Any]] = [("gateway base", lambda ps: load(url, key, model, ps, opts))]
        if lora_model:
            scenarios.append(("gateway lora", lambda ps: load(url, key, lora_model, ps, opts)))
        if running is not None and opts.direct and backend == "vllm":
            # vLLM's own server, called by the same client as the gateway: the gateway's overhead
            served = running.gateway.backend
            vllm_url, vllm_key = f"{served.base_url}/v1", served.api_key
            scenarios.insert(1, ("direct base", lambda ps: load(vllm_url, vllm_key, served.base_id,
                                                                ps, opts)))
            if lora_model:
                scenarios.append(("direct lora", lambda ps: load(vllm_url, vllm_key, info["lora_id"],
                                                                 ps, opts)))
        elif running is not None and opts.direct:
            served, loop = running.gateway.backend, running.gateway.loop
            scenarios.insert(1, ("direct base", lambda ps: _on_loop(
                loop, direct_load(served, served.base_id, ps, opts))))
            if lora_model:
                scenarios.append(("direct lora", lambda ps: _on_loop(
                    loop, direct_load(served, info["lora_id"], ps, opts))))
        for name, make in scenarios:
            err.print(f"[dim]bench: {name} ({opts.requests} requests, concurrency {opts.concurrency})[/]")
            asyncio.run(_as_coro(lambda: make(_warmup(prompts, opts))))
            cpu = time.process_time()  # this process: the gateway when self-started (not vLLM)
            samples, wall = asyncio.run(_as_coro(lambda: make(prompts)))
            results.append(summarize(name, samples, wall,
                                     time.process_time() - cpu if running is not None else None))
    finally:
        if running is not None:
            running.stop()
        tmp.cleanup()
    report = {"options": opts.__dict__, "url": None if running is not None else url,
              "model": (Path(model_dir).name if model_dir else "tiny-llama") if running is not None else model,
              "threads": threads if running is not None else None,
              "self_started": running is not None, "backend": backend if running is not None else None,
              "scenarios": results, "ratios": _ratios(results)}
    _print(report)
    return report


async def _as_coro(make: Any) -> Any:
    result = make()
    return await result if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future) else result


def _on_loop(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def _ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["scenario"]: r for r in results}

    def ratio(a: str, b: str, key: str) -> float | None:
        if a in by and b in by and by[a][key] and by[b][key]:
            return round(by[a][key] / by[b][key], 3)
        return None

    return {"gateway_vs_direct_tokens_per_s": ratio("gateway base", "direct base", "tokens_per_s"),
            "gateway_vs_direct_ttft_p50": ratio("gateway base", "direct base", "ttft_ms_p50"),
            "lora_vs_base_tokens_per_s": ratio("gateway lora", "gateway base", "tokens_per_s"),
            "lora_vs_base_direct_tokens_per_s": ratio("direct lora", "direct base", "tokens_per_s")}


def _print(report: dict[str, Any]) -> None:
    cols = ("requests", "errors", "tokens_per_s", "requests_per_s", "ttft_ms_p50", "ttft_ms_p95",
            "ttft_ms_p99", "itl_ms_p50", "itl_ms_p95", "itl_ms_p99", "e2e_ms_p50", "e2e_ms_p99",
            "server_cpu_us_per_token")
    table = Table("scenario", *cols, title="serving benchmark (ms; tokens/s = completion tokens / wall)")
    for r in report["scenarios"]:
        table.add_row(r["scenario"], *("" if r[c] is None else str(r[c]) for c in cols))
    Console(stderr=True, width=max(err.width, 170), highlight=False).print(table)
    for name, value in report["ratios"].items():
        if value is not None:
            err.print(f"{name}: [bold]{value}[/]")
