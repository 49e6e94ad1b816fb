#!/usr/bin/env python
"""Serving benchmark: TTFT, inter-token latency, tokens/s, p50/p95/p99 and error rate of the gateway.

Without --url it builds a tiny model and a LoRA adapter in a temporary directory, starts a
transformers-backend gateway on a free loopback port and measures: the gateway (base model),
the same backend without HTTP (the gateway's overhead as a ratio), and the LoRA adapter (LoRA vs
base throughput). Ends with one JSON line on stdout.

    python scripts/bench_serve.py --quick
    python scripts/bench_serve.py --url http://127.0.0.1:8000/v1 --key $KEY --model support-bot
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import offline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running gateway's base URL (…/v1); default: self-start")
    parser.add_argument("--key", help="API key for --url")
    parser.add_argument("--model", help="model to call on --url")
    parser.add_argument("--lora-model", help="also measure this model (e.g. a promoted adapter)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prompt-words", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--no-direct", action="store_true", help="skip the backend-without-HTTP run")
    parser.add_argument("--model-dir", type=Path, help="self-start with this HF model directory "
                        "(e.g. studio-workspace/models/smollm2-135m-instruct) instead of a tiny model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads when self-started "
                        "(0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="16 requests, 16 tokens each")
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers",
                        help="self-started backend; vllm needs --model-dir with attention heads of "
                             "size >= 32 on CPU (e.g. SmolLM2) and vLLM in its own venv")
    args = parser.parse_args()
    offline.enforce()
    with tempfile.TemporaryDirectory(prefix="studio-bench-caches-") as caches:
        offline.confine_caches(caches)
        from engine.console import quiet_libraries
        from engine.serve.bench import BenchOptions, run_bench

        quiet_libraries()
        opts = BenchOptions(concurrency=args.concurrency, requests=16 if args.quick else args.requests,
                            prompt_words=args.prompt_words, max_tokens=16 if args.quick else args.max_tokens,
                            direct=not args.no_direct)
        report = run_bench(opts, url=args.url, key=args.key, model=args.model, lora_model=args.lora_model,
                           model_dir=args.model_dir, threads=args.threads or None, backend=args.backend)
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
