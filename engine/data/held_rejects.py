"""Rejects held back while a stage that runs elsewhere takes in its whole input, and written later,
where the streaming refine would have written them.

In-process, an LLM stage pulls its records a batch at a time, so the rejects of the stages before
it (quality, dedup, decontam, …) reach rejects.jsonl between its own: those that arrive while it
pulls batch b are written just before batch b's first item. A stage run as datatrove tasks
(engine/data/refine_datatrove_llm.py) must take in its whole input first; RefineRun then holds the
rejects that arrive meanwhile here (counted at once, their lines on disk, each with the number of
records the stage had taken when it came), and the stage releases them at its batch boundaries:
the same file, line for line, and the same card examples (a held reject keeps its record only
while its reason may still need an example).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.records import Conversation, Reject


class HeldRejects:
    """One stage's held rejects: `add` while it takes its input (`position`: records taken so far),
    `stop` when it has all of it, then `release(below)` writes those that came before record
    `below` was taken (all with None), through `write`."""

    def __init__(self, path: Path, write: Callable[[Reject, Conversation | None], None],
                 examples: Callable[[str], int], per_reason: int, holding: list["HeldRejects"]):
        self.path, self.write, self.examples, self.per_reason = path, write, examples, per_reason
        self.holding = holding  # the holds taking rejects now, innermost last: this one joins
        self.file = open(path, "w+", encoding="utf-8", newline="\n")
        holding.append(self)
        self.position = 0
        self.kept: Counter = Counter()  # per reason: held with their record (for an example)
        self._next: dict[str, Any] | None = None

    def add(self, item: Reject, conv: Conversation | None) -> None:
        keep = conv is not None and self.examples(item.reason) + self.kept[item.reason] < self.per_reason
        if keep:
            self.kept[item.reason] += 1
        self.file.write(json.dumps({"at": self.position, "reject": item.to_dict(),
                                    "record": conv.to_dict() if keep and conv is not None else None},
                                   ensure_ascii=False) + "\n")

    def stop(self) -> None:
        assert self.holding and self.holding[-1] is self, "holds stop innermost first"
        self.holding.pop()
        self.file.flush()
        self.file.seek(0)

    def release(self, below: int | None) -> None:
        while True:
            if self._next is None:
                line = self.file.readline()
                if not line:
                    return
                self._next = json.loads(line)
            if below is not None and self._next["at"] >= below:
                return
            held, self._next = self._next, None
            record = held["record"]
            self.write(Reject.from_dict(held["reject"]),
                       Conversation.from_dict(record) if record is not None else None)

    def close(self) -> None:
        if self in self.holding:
            self.holding.remove(self)
        self.file.close()
        self.path.unlink(missing_ok=True)
