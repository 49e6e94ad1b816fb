"""Example GRPO reward for Brightwave Home's triage desk: does the reply use the house format?

Referenced from configs/grpo.yaml as `../scripts/rewards_example.py:format_reward`. A reward
function receives TRL's keyword arguments: `completions` (one per sampled reply; in conversational
mode a list of messages whose last one is the assistant's reply), `prompts`, `completion_ids`,
every other column of the training data (e.g. `answer`, `queue`) as lists aligned with
`completions`, and `trainer_state`. It returns one float (or None to abstain) per completion.
"""

from __future__ import annotations

import re
from typing import Any

HOUSE_FORMAT = re.compile(r"^Queue: [A-Z-]+ \| Priority: P[123]$")


def reply_text(completion: Any) -> str:
    """The reply's text: a plain string, or the last assistant message's content."""
    if isinstance(completion, str):
        return completion
    for message in reversed(completion):
        if message.get("role") == "assistant":
            return str(message.get("content") or "")
    return ""


def format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when the whole reply is one routing line in the house format, else 0.0."""
    return [1.0 if HOUSE_FORMAT.match(reply_text(c).strip()) else 0.0 for c in completions]
