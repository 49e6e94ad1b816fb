#!/usr/bin/env python3
"""Benchmark: vLLM start-up time and generation tokens/s, base model vs a LoRA adapter, one run.

Launches vLLM through the engine's serving backend (engine/generation/vllm_server.py), then sends
`--requests` completion requests at once (each `--max-tokens` tokens, `ignore_eos`, greedy), for
the base model and for a LoRA adapter (random non-zero B, served unmerged): one warm-up burst
each, then `--rounds` bursts alternating base and LoRA, the median of each kept.
tokens/s = completion tokens / wall time of the whole burst.
Offline; everything happens in a temporary directory removed at the end.

    python scripts/bench_vllm.py                       # the tiny vLLM-servable test model
    python scripts/bench_vllm.py --model DIR --adapter DIR --max-model-len 2048

Needs vLLM in its own venv (scripts/setup_vllm_env.sh). The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import offline  # noqa: E402


async def burst(backend: object, model: str, n: int, max_tokens: int) -> tuple[float, int]:
    body = {"model": model, "prompt": "Hello, my order has not arrived. Can you help me?",
            "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
    t0 = time.monotonic()
    outs = await asyncio.gather(*(backend.complete(dict(body)) for _ in range(n)))  # type: ignore[attr-defined]
    wall = time.monotonic() - t0
    return wall, sum(o["usage"]["completion_tokens"] for o in outs)


async def main(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    from engine.generation.vllm_server import VLLMBackend

    if args.model:
        model, adapter = Path(args.model), Path(args.adapter) if args.adapter else None
    else:
        from tests.serve.vllm_helpers import build_vllm_tiny, make_lora

        model = build_vllm_tiny(tmp / "tiny")
        adapter = make_lora(model, tmp / "adapter", seed=1)
    backend = VLLMBackend(model, base_id="base", cache_dir=tmp / "cache",
                          adapters={"lora": adapter} if adapter else {},
                          max_model_len=args.max_model_len, max_lora_rank=args.max_lora_rank,
                          max_loras=1)
    t0 = time.monotonic()
    await backend.start()
    result: dict[str, object] = {"startup_s": round(time.monotonic() - t0, 1),
                                 "requests": args.requests, "max_tokens": args.max_tokens}
    names = ["base"] + (["lora"] if adapter else [])
    try:
        runs: dict[str, list[tuple[float, int]]] = {n: [] for n in names}
        for name in names:
            await burst(backend, name, args.requests, args.max_tokens)   # warm-up, same shapes
        for _ in range(args.rounds):          # interleaved, so machine load hits both alike
            for name in names:
                runs[name].append(await burst(backend, name, args.requests, args.max_tokens))
        for name in names:
            wall, tokens = sorted(runs[name])[len(runs[name]) // 2]        # the median
            result[f"{name}_tok_s"] = round(tokens / wall, 1)
            result[f"{name}_wall_s"] = round(wall, 2)
            print(f"{name}: {tokens} tokens in {wall:.2f} s = {tokens / wall:.0f} tok/s", flush=True)
        result["loadavg_1m"] = round(os.getloadavg()[0], 2)
    finally:
        await backend.stop()
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model directory (default: the tiny test model)")
    p.add_argument("--adapter", help="LoRA adapter directory")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=512)
    p.add_argument("--max-lora-rank", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="timed bursts per model (median kept)")
    args = p.parse_args()
    offline.enforce()
    tmp = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    try:
        offline.confine_caches(tmp / "caches")
        print(json.dumps(asyncio.run(main(args, tmp))))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
