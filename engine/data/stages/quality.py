"""Quality stage: the minimal gate every training conversation must pass (turn count and roles).

Reasons, checked in this order: `too_few_turns` (fewer than min_turns non-system turns),
`no_user_turn`, `no_final_assistant_turn` (no assistant turn, or the last turn is not the
assistant's).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from engine.records import Conversation, Reject

STAGE = "quality"


def check(conv: Conversation, min_turns: int) -> tuple[str, str] | None:
    """(reason, detail) when the conversation fails the gate, else None."""
    turns = [m["role"] for m in conv.messages if m["role"] != "system"]
    if len(turns) < min_turns:
        return "too_few_turns", f"{len(turns)} non-system turns, need {min_turns}"
    if "user" not in turns:
        return "no_user_turn", f"{len(turns)} non-system turns, none from the user"
    if "assistant" not in turns:
        return "no_final_assistant_turn", "no assistant turn"
    if turns[-1] != "assistant":
        return "no_final_assistant_turn", f"last turn is '{turns[-1]}'"
    return None


def gate(records: Iterable[Conversation], min_turns: int) -> Iterator[Conversation | Reject]:
    for conv in records:
        failed = check(conv, min_turns)
        if failed is None:
            yield conv
        else:
            yield Reject(source=conv.source, stage=STAGE, reason=failed[0], detail=failed[1],
                         record_id=conv.id)
