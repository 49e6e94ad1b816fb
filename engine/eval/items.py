"""The items of an eval and its result record: a dataset split cut before each final answer, eval ids.

An item is a conversation cut before its final assistant turn: the prompt is everything before
it and the reference is its content; its hash is sha256 of the canonical JSON of both, so two
evals of the same items pair up in `studio diff` (a suite task without a template hashes its items
the same way: engine/eval/suite.py).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.errors import StudioError
from engine.hashing import sha256_json


@dataclass
class EvalResult:
    eval_id: str
    path: Path
    model_ref: str
    n: int
    score: float
    cache: dict[str, Any] = field(default_factory=dict)  # CacheStats.as_dict(): hits, misses, ...
    proof_sha256: str | None = None


def load_items(dataset: dict[str, Any], split: str, limit: int | None = None) -> list[dict[str, Any]]:
    path = Path(dataset["path"]) / f"{split}.jsonl"
    if not path.is_file():
        raise StudioError(f"dataset has no {split} split", where=str(path))
    items = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            msgs = rec["messages"]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is None:
                continue
            prompt, reference = msgs[:last], msgs[last]["content"]
            items.append({"item_id": rec["id"], "prompt": prompt, "reference": reference,
                          "meta": rec.get("meta", {}),
                          "item_hash": sha256_json({"prompt": prompt, "reference": reference})})
    if not items:
        raise StudioError(f"the {split} split has no items with an assistant answer", where=str(path))
    return items[:limit] if limit else items


def new_eval_id() -> str:
    return datetime.now(timezone.utc).strftime("eval-%Y%m%d-%H%M%S-") + secrets.token_hex(2)
