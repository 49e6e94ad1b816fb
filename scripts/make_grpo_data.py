#!/usr/bin/env python3
"""Generate GRPO prompts for Brightwave Home's triage desk: tickets plus the routing line expected.

Each line is a prompt-only record (data format `trl_prompt`) whose extra columns reach the reward
functions: `answer` is the desk's routing line in the house format ("Queue: X | Priority: Pn"),
`queue` and `priority` its parts, `product` a slice key. Tickets reuse the queues, products and
priority rule of make_sample_data.py, without the noise and personal data of the raw exports
(GRPO prompts are what a refined dataset would hold).

Writes (deterministically, given --seed):
  <out>/triage_prompts.jsonl
    {"prompt": [{"role": "system", ...}, {"role": "user", ...}], "answer": "Queue: RETURNS | Priority: P2",
     "queue": "RETURNS", "priority": "P2", "product": "Halo thermostat"}
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample_data import PRODUCTS, QUEUES, SYSTEM, URGENT, priority  # noqa: E402

GREETINGS = ["", "Hi, ", "Hello, ", "Good morning, "]


def make_prompt(rng: random.Random) -> dict:
    queue = rng.choice(sorted(QUEUES))
    product = rng.choice(PRODUCTS)
    text = rng.choice(GREETINGS) + rng.choice(QUEUES[queue]).format(
        product=product, order=f"#{rng.randint(100000, 999999)}")
    urgent = rng.random() < 0.3
    if urgent:
        text += " " + rng.choice(URGENT)
    prio = priority(urgent, queue)
    return {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            "answer": f"Queue: {queue} | Priority: {prio}", "queue": queue, "priority": prio,
            "product": product}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/grpo"))
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "triage_prompts.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for _ in range(args.prompts):
            f.write(json.dumps(make_prompt(rng), ensure_ascii=False) + "\n")
    print(f"wrote {args.prompts} prompts to {path}")


if __name__ == "__main__":
    main()
