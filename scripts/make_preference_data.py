#!/usr/bin/env python3
"""Generate example preference data for Brightwave Home's triage desk (DPO/ORPO/SimPO/KTO/reward demos).

The desk answers every ticket with one routing line in a house format, e.g.
"Queue: BILLING-REFUND | Priority: P2". Reviewers compared two drafts per ticket (pairs) and gave
thumbs up/down to single drafts (feedback). Rejected drafts are the mistakes real drafts make:
the wrong queue, the wrong priority, a chatty reply instead of the routing line, or a broken format.

Writes (deterministically, given --seed):
  <out>/pairs.jsonl     OpenAI preference format:
                        {"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", ...}],
                         "non_preferred_output": [{"role": "assistant", ...}]}
  <out>/feedback.jsonl  unpaired thumbs up/down (KTO):
                        {"prompt": [...], "completion": [{"role": "assistant", ...}], "label": true|false}
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SYSTEM = "You are the Brightwave Home triage assistant."
TICKETS: dict[str, list[str]] = {
    "BILLING-REFUND": [
        "I was charged twice for my {product} order {order}, please refund the duplicate charge",
        "Where is my refund for order {order}? It has been two weeks",
        "The invoice for {order} shows more than the listed price of the {product}",
    ],
    "SHIPPING-DELAY": [
        "My {product} (order {order}) still has not arrived, tracking has not moved in days",
        "Order {order} was supposed to be delivered yesterday. Where is my package?",
        "Tracking for {order} says label created for a week now",
    ],
    "RETURNS": [
        "I want to return the {product} from order {order}, it does not fit my setup",
        "The {product} arrived damaged, the box was crushed. I'd like to return it",
        "Can I exchange the {product} for a different model? Order {order}",
    ],
    "ACCOUNT-ACCESS": [
        "I can't log in to my Brightwave account, the password reset email never comes",
        "My account is locked after too many login attempts, please unlock it",
        "The two-factor code is not arriving so I cannot sign in to the app",
    ],
    "TECH-SUPPORT": [
        "My {product} keeps disconnecting from wifi every few hours",
        "The {product} won't pair with the Brightwave app, it is stuck on searching",
        "After the last firmware update my {product} does not turn on anymore",
    ],
    "SALES-INQUIRY": [
        "Do you offer bulk pricing if I buy 20 {product} units for our office?",
        "Is the {product} compatible with Apple Home before I buy it?",
        "When will the {product} be back in stock? I want to order two",
    ],
}
PRODUCTS = ["Aura smart bulb", "Halo thermostat", "Sentry doorbell cam", "Pulse smart plug",
            "Nimbus air purifier", "Beacon motion sensor", "Echo hub", "Lumen light strip"]
URGENT = ["This is urgent!", "I need this fixed TODAY.", "Third time I'm writing about this."]
CHATTY = [
    "I'm so sorry to hear that! Let me look into this for you right away.",
    "Thanks for reaching out to Brightwave Home. A colleague will get back to you soon.",
    "Have you tried turning it off and on again?",
]


def priority(urgent: bool, queue: str) -> str:
    if urgent:
        return "P1"
    return "P3" if queue == "SALES-INQUIRY" else "P2"


def routing(queue: str, prio: str) -> str:
    return f"Queue: {queue} | Priority: {prio}"


def make_ticket(rng: random.Random) -> tuple[list[dict[str, str]], str, str, str]:
    """(prompt messages, right answer, queue, priority) for one synthetic ticket."""
    queue = rng.choice(sorted(TICKETS))
    text = rng.choice(TICKETS[queue]).format(product=rng.choice(PRODUCTS),
                                             order=f"#{rng.randint(100000, 999999)}")
    urgent = rng.random() < 0.3
    if urgent:
        text += " " + rng.choice(URGENT)
    prio = priority(urgent, queue)
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    return prompt, routing(queue, prio), queue, prio


def wrong_answer(rng: random.Random, queue: str, prio: str) -> str:
    """A plausible bad draft: wrong queue, wrong priority, chatty prose, or a broken format."""
    kind = rng.choice(["queue", "priority", "chatty", "format"])
    if kind == "queue":
        return routing(rng.choice([q for q in sorted(TICKETS) if q != queue]), prio)
    if kind == "priority":
        return routing(queue, rng.choice([p for p in ("P1", "P2", "P3") if p != prio]))
    if kind == "chatty":
        return rng.choice(CHATTY)
    return f"{queue.lower().replace('-', ' ')}, {prio}"


def make_pairs(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        prompt, good, queue, prio = make_ticket(rng)
        bad = wrong_answer(rng, queue, prio)
        rows.append({"input": {"messages": prompt},
                     "preferred_output": [{"role": "assistant", "content": good}],
                     "non_preferred_output": [{"role": "assistant", "content": bad}]})
    return rows


def make_feedback(rng: random.Random, n: int, up_share: float = 0.6) -> list[dict]:
    """Thumbs up/down on single drafts; real logs have more ups than downs."""
    rows = []
    for _ in range(n):
        prompt, good, queue, prio = make_ticket(rng)
        up = rng.random() < up_share
        reply = good if up else wrong_answer(rng, queue, prio)
        rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": reply}], "label": up})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/preference"))
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--feedback", type=int, default=128)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "pairs.jsonl", make_pairs(random.Random(args.seed), args.pairs))
    write_jsonl(args.out / "feedback.jsonl", make_feedback(random.Random(args.seed + 1), args.feedback))
    print(f"wrote {args.pairs} pairs to {args.out / 'pairs.jsonl'} and "
          f"{args.feedback} thumbs up/down rows to {args.out / 'feedback.jsonl'}")


if __name__ == "__main__":
    main()
