#!/usr/bin/env python3
"""Generate the quickstart's raw logs for Brightwave Home, a fictional smart-home retailer.

Its tier-0 triage desk answers every incoming ticket with one routing line in a house format,
e.g. "Queue: BILLING-REFUND | Priority: P2". The raw exports are noisy the way real ones are:
HTML entities, signatures, "Sent from my iPhone", odd whitespace and Unicode, duplicated
tickets, emails, phone numbers and card numbers typed into messages, and a few broken lines.

Writes (deterministically, given --seed):
  <out>/tickets.csv       email/web-form tickets: ticket_id, created, customer_name, channel,
                          product, transcript ("Customer: …" / "Agent: …" lines)
  <out>/chat_export.jsonl chat-widget conversations in OpenAI chat format
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

QUEUES: dict[str, list[str]] = {
    "BILLING-REFUND": [
        "I was charged twice for my {product} order {order}, please refund the duplicate charge",
        "Can I get a refund for the {product}? I cancelled order {order} but the money is still gone",
        "my card got billed two times for order {order}. I want my money back",
        "You took payment for the {product} twice this month, refund one of them please",
        "Where is my refund for order {order}? It has been two weeks since you confirmed it",
        "the invoice for {order} shows the wrong amount, I paid more than the listed price of the {product}",
    ],
    "SHIPPING-DELAY": [
        "My {product} (order {order}) still has not arrived, tracking has not moved in days",
        "Order {order} was supposed to be delivered yesterday. Where is my package?",
        "the courier says the parcel with my {product} is delayed again, when will it ship?",
        "Tracking for {order} says 'label created' for a week now. has it even been shipped??",
        "still waiting on delivery of the {product}, order {order}. can you check with the carrier",
        "Package for order {order} shows delivered but nothing is at my door",
    ],
    "RETURNS": [
        "I want to return the {product} from order {order}, it does not fit my setup",
        "How do I send back the {product}? I need a return label for order {order}",
        "The {product} arrived damaged, the box was crushed. I'd like to return it",
        "Can I exchange the {product} for a different model? Order {order}",
        "wrong item in my box for order {order}, I got a {product} I never ordered. returning it",
        "the {product} is not what I expected, I would like to send it back within the 30 days",
    ],
    "ACCOUNT-ACCESS": [
        "I can't log in to my Brightwave account, the password reset email never comes",
        "my account is locked after too many login attempts, please unlock it",
        "I need to change the email address on my account, I no longer use the old one",
        "two-factor code is not arriving so I cannot sign in to the app",
        "Someone else may have accessed my account, I see a login I don't recognise",
        "How do I delete my Brightwave account and all my data?",
    ],
    "TECH-SUPPORT": [
        "My {product} keeps disconnecting from wifi every few hours",
        "the {product} won't pair with the Brightwave app, it is stuck on 'searching'",
        "After the last firmware update my {product} does not turn on anymore",
        "The {product} shows a blinking red light and does not respond to the app",
        "how do I reset the {product} to factory settings? it stopped responding to voice commands",
        "{product} is offline in the app even though my router works fine",
    ],
    "SALES-INQUIRY": [
        "Do you offer bulk pricing if I buy 20 {product} units for our office?",
        "Is the {product} compatible with Apple Home before I buy it?",
        "When will the {product} be back in stock? I want to order two",
        "Do you have a discount for buying the {product} together with the hub?",
        "I'm interested in the {product} for a rental property, do you sell business plans?",
        "What's the difference between the {product} and the Pro version? thinking of buying",
    ],
}
URGENT = ["This is urgent!", "I need this fixed TODAY.", "Third time I'm writing about this.",
          "Very frustrated.", "Please hurry, this is unacceptable."]
PRODUCTS = ["Aura smart bulb", "Halo thermostat", "Sentry doorbell cam", "Pulse smart plug",
            "Nimbus air purifier", "Beacon motion sensor", "Echo hub", "Lumen light strip"]
FIRST = ["Maria", "John", "Aisha", "Kenji", "Lucas", "Priya", "Olga", "Tom", "Fatima", "Chen",
         "Sofia", "Liam", "Noah", "Emma", "Mateo", "Yuki"]
LAST = ["Garcia", "Smith", "Khan", "Tanaka", "Silva", "Patel", "Ivanova", "Brown", "Haddad",
        "Wei", "Rossi", "Murphy", "Novak", "Schmidt", "Lopez", "Sato"]
GREETINGS = ["", "Hi, ", "Hello, ", "hey ", "Good morning, ", "Dear Brightwave team, "]
SIGNOFFS = ["", "\nThanks", "\nThanks,\n{name}", "\nRegards, {name}", "\n\nSent from my iPhone",
            "\nBest,\n{name}\n{phone}"]
PHONES = ["+44 20 7946 0958", "(555) 123-4567", "+1 415 555 0100", "0049 30 1234567",
          "555-867-5309"]
CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004"]
NOISE = [("'", "&#39;"), ("&", "&amp;"), (" ", "  "), ("'", "\u2019"), ("e", "\u00e9")]
SYSTEM = "You are the Brightwave Home triage assistant."


def priority(urgent: bool, queue: str) -> str:
    if urgent:
        return "P1"
    return "P3" if queue == "SALES-INQUIRY" else "P2"


def make_ticket(rng: random.Random, idx: int) -> dict:
    queue = rng.choice(sorted(QUEUES))
    template = rng.choice(QUEUES[queue])
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    product = rng.choice(PRODUCTS)
    order = f"#{rng.randint(100000, 999999)}"
    text = rng.choice(GREETINGS) + template.format(product=product, order=order)
    urgent = rng.random() < 0.3
    if urgent:
        text += " " + rng.choice(URGENT)
    if rng.random() < 0.25:
        email = f"{name.split()[0].lower()}.{name.split()[1].lower()}@example.com"
        text += f" You can reach me at {email}."
    if rng.random() < 0.2:
        text += f" My number is {rng.choice(PHONES)}."
    if rng.random() < 0.08:
        text += f" Card used: {rng.choice(CARDS)}."
    text += rng.choice(SIGNOFFS).format(name=name.split()[0], phone=rng.choice(PHONES))
    if rng.random() < 0.3:
        old, new = rng.choice(NOISE)
        text = text.replace(old, new, 1)
    answer = f"Queue: {queue} | Priority: {priority(urgent, queue)}"
    return {"id": f"BW-{10000 + idx}", "name": name, "product": product, "queue": queue,
            "text": text, "answer": answer, "channel": rng.choice(["email", "web"])}


def write_csv(path: Path, tickets: list[dict], rng: random.Random) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ticket_id", "created", "customer_name", "channel", "product", "transcript"])
        for i, t in enumerate(tickets):
            body = t["text"].replace("\n", "\n  ")  # continuation lines of the customer's turn
            transcript = f"Customer: {body}\nAgent: {t['answer']}"
            if rng.random() < 0.1:  # the customer wrote twice before the desk answered
                transcript = f"Customer: {body}\nCustomer: (sorry, forgot: order attached)\nAgent: {t['answer']}"
            day = 1 + i % 28
            w.writerow([t["id"], f"2026-10-{day:02d}", t["name"], t["channel"], t["product"],
                        transcript])
        w.writerow(["BW-99999", "2026-10-30", "Empty Row", "web", "", ""])  # an empty export row


def write_jsonl(path: Path, tickets: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i, t in enumerate(tickets):
            rec = {"id": f"chat-{t['id']}", "metadata": {"product": t["product"], "channel": "chat"},
                   "messages": [{"role": "user", "content": t["text"]},
                                {"role": "assistant", "content": t["answer"]}]}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            if i == 7:
                f.write('{"id": "chat-broken", "messages": [{"role": "user", "content": "trunc\n')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/raw"))
    ap.add_argument("--tickets", type=int, default=420, help="unique tickets before duplication")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tickets = [make_ticket(rng, i) for i in range(args.tickets)]
    dupes = [dict(t) for t in rng.sample(tickets, k=max(1, args.tickets // 12))]
    csv_part, chat_part = tickets[: args.tickets * 2 // 3], tickets[args.tickets * 2 // 3:]
    csv_part = csv_part + dupes[: len(dupes) // 2]
    chat_part = chat_part + dupes[len(dupes) // 2:]
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "tickets.csv", csv_part, rng)
    write_jsonl(args.out / "chat_export.jsonl", chat_part)
    print(f"wrote {len(csv_part)} tickets to {args.out / 'tickets.csv'} and "
          f"{len(chat_part)} chats to {args.out / 'chat_export.jsonl'}")


if __name__ == "__main__":
    main()
