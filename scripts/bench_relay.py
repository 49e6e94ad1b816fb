"""The gateway's own work per streamed chunk: the relay's text edits (engine/serve/sse.py) against
decoding and re-encoding each chunk (what the gateway did before), on vLLM-shaped chunks, in one
process. Prints microseconds per chunk for both and their ratio.

    python scripts/bench_relay.py [--chunks 20000] [--text-words 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.serve.sse import Relay, encode  # noqa: E402

INTERNAL = "_acme__support-bot"


def chunks(n: int, words: int) -> list[str]:
    """A stream as vLLM sends it with continuous usage stats: role chunk, text chunks, finish
    chunk, usage-only chunk."""
    out = []
    for i in range(n):
        usage = {"prompt_tokens": 57, "total_tokens": 57 + i, "completion_tokens": i}
        delta: dict[str, Any] = {"content": " ".join(["token"] * words) + f" {i}"}
        out.append(encode({"id": "chatcmpl-6f1d2c", "object": "chat.completion.chunk",
                           "created": 1764950000, "model": INTERNAL,
                           "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                        "finish_reason": None, "token_ids": None}],
                           "usage": usage}))
    return out


def decode_reencode(payload: str, name: str, include_usage: bool) -> str | None:
    """The previous path: json.loads in the backend, a dict copy and json.dumps in the gateway."""
    chunk = json.loads(payload)
    if chunk.get("choices"):
        chunk = {k: v for k, v in chunk.items() if k != "usage"}
        if include_usage:
            chunk["usage"] = None
    if chunk.get("choices") or include_usage:
        return json.dumps({**chunk, "model": name})
    return None


def timed(fn: Any, payloads: list[str], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for p in payloads:
            fn(p)
        best = min(best, time.perf_counter() - t0)
    return best / len(payloads) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--text-words", type=int, default=1, help="words of text per chunk")
    args = parser.parse_args()
    payloads = chunks(args.chunks, args.text_words)
    rows = []
    for include_usage in (False, True):
        relay = Relay(INTERNAL, "support-bot", include_usage)
        new = timed(relay.edit, payloads)
        old = timed(lambda p: decode_reencode(p, "support-bot", include_usage), payloads)
        rows.append({"include_usage": include_usage, "relay_us_per_chunk": round(new, 2),
                     "decode_reencode_us_per_chunk": round(old, 2),
                     "relay_vs_decode_reencode_time": round(new / old, 3)})
        print(f"include_usage={include_usage!s:5}  relay {new:6.2f} µs/chunk   "
              f"decode+re-encode {old:6.2f} µs/chunk   ratio {new / old:.3f}", file=sys.stderr)
    print(json.dumps({"chunks": args.chunks, "text_words": args.text_words, "results": rows}))


if __name__ == "__main__":
    main()
