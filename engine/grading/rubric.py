"""The 1-5 rubric judge prompt and its expected-score arithmetic (the refine's judge and eval's judges).

A conversation is shown as 'Customer: …' / 'Agent: …' lines after a rubric and two fixed anchors;
the score is read from the next-token probabilities of the single tokens "1".."5"
(backend.choice_logprobs): the expected digit over the renormalised probabilities, always
defined even for a weak model that would not write a clean digit.
"""

from __future__ import annotations

import math

from engine.records import Conversation

SPEAKERS = {"user": "Customer", "assistant": "Agent", "system": "System"}
CHOICES = ["1", "2", "3", "4", "5"]
SYSTEM = ("You are a strict reviewer of customer-support replies. You answer with a single digit "
          "from 1 to 5.")
# Two fixed anchors for the ends of the scale: small models rank replies much better with them
# (SmolLM2-135M ordered 5/5 good-vs-useless pairs right with them, 1/5 to 4/5 without).
ANCHORS = ("Example 1:\nCustomer: My order has not arrived yet.\nAgent: no idea\nScore: 1\n\n"
           "Example 2:\nCustomer: My order has not arrived yet.\nAgent: Sorry about the delay! "
           "Your order shipped on Monday and the carrier expects to deliver it tomorrow. You can "
           "follow it with the tracking link in your confirmation email.\nScore: 5\n\n")
WHY = "In one short sentence, why did you give this score?"


def judge_prompt(conv: Conversation, rubric: str, max_chars: int) -> list[dict[str, str]]:
    """The chat prompt whose next token is the score: rubric, anchors, then the conversation."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{rubric}\n\n{ANCHORS}Now rate this one.\n"
                                    f"{transcript(conv.messages, max_chars)}\nScore:"},
    ]


def score_from_logprobs(logprobs: list[float]) -> tuple[float, list[float]]:
    """(expected score, probabilities renormalised over the 5 choices)."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    probs = [w / total for w in weights]
    return sum((i + 1) * p for i, p in enumerate(probs)), probs


def transcript(messages: list[dict[str, str]], max_chars: int) -> str:
    """'Customer: …' / 'Agent: …' lines without system messages; only the last max_chars kept."""
    text = "\n".join(f"{SPEAKERS.get(m['role'], m['role'])}: {m['content']}"
                     for m in messages if m["role"] != "system")
    if len(text) <= max_chars:
        return text
    return "[…]" + text[len(text) - max_chars:]
