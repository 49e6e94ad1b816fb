"""Decontamination: drop training records that contain or nearly copy an item of the eval set.

The eval set is the customer's own: the eval split the pipeline carved out plus every file in
`decontam.against` (`load_against`: OpenAI messages JSONL, or eval-suite JSONL items whose text is
in "prompt" or "input"). Two checks, both against every eval item (`EvalIndex.check`):

  eval_ngram_overlap   "x% of 8-grams shared with eval item <id>": the share of the eval item's
                       word n-grams (`ngram`, default 8) that occur in the training record, at or
                       above `max_overlap`. Measured on the USER side on both ends: in support
                       data the agent's replies are templated and legitimately shared between
                       train and eval, while an eval question showing up in a training
                       conversation (even pasted into a longer one) is contamination. Eval
                       prompts shorter than n words count as one n-gram of their own length if
                       they have at least max(3, n // 2) words; shorter ones only get the
                       near-duplicate check.
  eval_near_duplicate  "jaccard≈0.91 with eval item <id>": the whole conversation's MinHash
                       (the dedup signature, engine/data/minhash.py) at or above `near_threshold`.

Words are \\w+ runs of the casefolded text with digit runs folded to "0" (a re-sent question with
another order number is the same question). The index keeps n-gram hashes and signatures, never
texts. How the pipeline uses it (two passes): split first; `add` every eval-split record and
every `load_against` item; then `check` each train/val record and reject the hits.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import DecontamSpec, DedupSpec
from engine.data.ingest.openai_jsonl import record_id
from engine.data.minhash import NearIndex, Signer, Sketch, normalize_side, window_hashes
from engine.errors import DataError
from engine.records import Conversation, Reject, SourceRef

STAGE = "decontam"
_WORD = re.compile(r"\w+")
_ANSWER_KEYS = ("completion", "ideal", "answer", "reference", "expected", "output")


@lru_cache(maxsize=1 << 16)
def _word_id(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def user_words(messages: Iterable[dict[str, str]]) -> np.ndarray:
    """uint64 ids of the words of the user turns (normalized like the dedup key)."""
    text = normalize_side(m["content"] for m in messages if m["role"] == "user")
    return np.fromiter((_word_id(w) for w in _WORD.findall(text)), dtype=np.uint64)


def ngram_set(words: np.ndarray, n: int) -> np.ndarray:
    """Distinct hashes of the word n-grams (empty when there are fewer than n words)."""
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    return np.unique(window_hashes(words, n))


class EvalIndex:
    """N-gram and MinHash index of the eval items; `check` tells whether a record hits one."""

    def __init__(self, spec: DecontamSpec, dedup: DedupSpec | None = None):
        d = dedup or DedupSpec()
        self.spec = spec
        self.n = spec.ngram
        self.min_words = max(3, spec.ngram // 2)
        self.signer = Signer(num_perm=d.num_perm, shingle=d.shingle, user_weight=d.user_weight)
        self.near = NearIndex(d.num_perm, spec.near_threshold)
        self.ids: list[str] = []
        self.gram_sizes: list[tuple[int, int]] = []  # per item: (n-gram length, distinct n-grams)
        self.lengths: set[int] = set()  # n-gram lengths in use (n, and shorter for short prompts)
        self.grams: dict[int, Any] = {}  # n-gram hash → item number, or a list (array) of them
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, conv: Conversation) -> None:
        item = len(self.ids)
        self.ids.append(conv.id)
        self.near.add(self.signer.sign(conv))
        words = user_words(conv.messages)
        size = min(self.n, len(words)) if len(words) >= self.min_words else 0
        grams = ngram_set(words, size) if size else np.zeros(0, dtype=np.uint64)
        self.gram_sizes.append((size, len(grams)))
        if not len(grams):
            return
        self.lengths.add(size)
        for g in grams.tolist():
            cur = self.grams.get(g)
            if cur is None:
                self.grams[g] = item
            elif type(cur) is list:
                cur.append(item)
            elif type(cur) is int:
                self.grams[g] = [cur, item]
            else:  # an array: this n-gram was already looked up by a check
                self.grams[g] = [*cur.tolist(), item]

    def add_all(self, convs: Iterable[Conversation]) -> int:
        n = 0
        for conv in convs:
            self.add(conv)
            n += 1
        return n

    def _item_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(n-gram length, distinct n-grams) per item as arrays, rebuilt after an `add`."""
        if self._arrays is None or len(self._arrays[0]) != len(self.gram_sizes):
            sizes = np.array(self.gram_sizes, dtype=np.int64).reshape(-1, 2)
            self._arrays = (sizes[:, 0], sizes[:, 1])
        return self._arrays

    def _postings(self, g: int) -> np.ndarray | int | None:
        """The items holding n-gram `g`; a list becomes an array on first use (a templated
        phrase can be in thousands of eval items: they are counted in numpy, not one by one)."""
        cur = self.grams.get(g)
        if type(cur) is list:
            cur = self.grams[g] = np.array(cur, dtype=np.int64)
        return cur

    def _overlap(self, words: np.ndarray) -> tuple[int, float] | None:
        if not self.grams:
            return None
        item_size, item_count = self._item_arrays()
        found: list[np.ndarray] = []
        for size in sorted(self.lengths):
            singles: list[int] = []
            arrays: list[np.ndarray] = []
            for g in ngram_set(words, size).tolist():
                cur = self._postings(g)
                if cur is None:
                    continue
                if type(cur) is int:
                    singles.append(cur)
                else:
                    arrays.append(cur)  # type: ignore[arg-type]
            items = np.concatenate([np.array(singles, dtype=np.int64), *arrays])
            found.append(items[item_size[items] == size])  # an item counts its own length only
        hits = np.concatenate(found)
        if not len(hits):
            return None
        items, counts = np.unique(hits, return_counts=True)  # sorted: ties go to the first item
        shares = counts / item_count[items]
        top = int(np.argmax(shares))
        share = float(shares[top])
        return (int(items[top]), share) if share >= self.spec.max_overlap else None

    def check(self, conv: Conversation) -> tuple[str, str] | None:
        """(reason, detail) when `conv` overlaps an eval item, else None. Details hold ids only."""
        hit = self.overlap_hit(conv) or self.near_hit(conv)
        return (hit[2], hit[3]) if hit is not None else None

    def overlap_hit(self, conv: Conversation) -> tuple[int, float, str, str] | None:
        """(item number, share, reason, detail) of the eval item whose n-grams `conv` shares
        most, at or above max_overlap (ties: the first item), else None."""
        return self.overlap_hit_words(user_words(conv.messages))

    def overlap_hit_words(self, words: np.ndarray) -> tuple[int, float, str, str] | None:
        """overlap_hit from the record's `user_words`."""
        hit = self._overlap(words)
        if hit is None:
            return None
        item, share = hit
        size = self.gram_sizes[item][0]
        return (item, share, "eval_ngram_overlap",
                f"{share:.0%} of {size}-grams shared with eval item {self.ids[item]}")

    def near_hit(self, conv: Conversation) -> tuple[int, float, str, str] | None:
        """(item number, jaccard, reason, detail) of the most similar eval item by MinHash, at
        or above near_threshold (ties: the first item), else None."""
        return self.near_hit_signature(self.signer.sign(conv).hashvalues)

    def near_hit_signature(self, signature: np.ndarray) -> tuple[int, float, str, str] | None:
        """near_hit from the record's MinHash hash values (this index's signer)."""
        near = self.near.best(Sketch(signature))
        if near is None:
            return None
        return (near[0], near[1], "eval_near_duplicate",
                f"jaccard≈{near[1]:.2f} with eval item {self.ids[near[0]]}")


# ----------------------------------------------------------------------------- against files
def _messages(value: Any) -> list[dict[str, str]] | None:
    """A list of {role, content} dicts (string contents), or None when it is not one."""
    if not isinstance(value, list) or not value:
        return None
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return None
        content = m.get("content")
        if not isinstance(content, str):
            return None
        role = m["role"].strip().casefold()
        out.append({"role": {"developer": "system"}.get(role, role), "content": content})
    return out


def _text_or_messages(value: Any, role: str) -> list[dict[str, str]] | None:
    if isinstance(value, str):
        return [{"role": role, "content": value}] if value.strip() else None
    if isinstance(value, dict):
        value = value.get("messages")
    return _messages(value)


def parse_eval_item(obj: Any) -> list[dict[str, str]] | str:
    """Messages of one eval line, or why it has none (no customer text in the reason)."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if "messages" in obj:
        msgs = _messages(obj["messages"])
        return msgs if msgs else "'messages' is not a non-empty list of {role, content} objects"
    for key in ("prompt", "input"):
        if key in obj:
            msgs = _text_or_messages(obj[key], "user")
            if not msgs:
                return f"'{key}' is neither a non-empty string nor a list of messages"
            for akey in _ANSWER_KEYS:
                answer = _text_or_messages(obj.get(akey), "assistant")
                if answer:
                    msgs = msgs + answer
                    break
            return msgs
    return "no 'messages', 'prompt' or 'input' field"


def load_against(paths: list[Path]) -> Iterator[Conversation]:
    """Eval items from JSONL files; a line that is not a usable item is a StudioError naming the
    file and line (these are the customer's own eval sets: silently skipping would hide
    contamination)."""
    for path in paths:
        path = Path(path)
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise DataError(f"cannot open eval file ({exc.__class__.__name__})", where=str(path),
                            hint="decontam.against paths resolve against the config file's folder"
                            ) from None
        with f:
            for line_no, raw in enumerate(f, start=1):
                where = f"{path}:{line_no}"
                try:
                    text = raw.decode("utf-8").removeprefix("\ufeff") if line_no == 1 \
                        else raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"eval line is not UTF-8 (byte at column {exc.start + 1})",
                                    where=where, hint="re-export the file as UTF-8") from None
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except (json.JSONDecodeError, RecursionError) as exc:
                    msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nesting too deep"
                    raise DataError(f"eval line is not JSON ({msg})", where=where,
                                    hint="one JSON object per line") from None
                msgs = parse_eval_item(obj)
                if isinstance(msgs, str):
                    raise DataError(f"eval line has no usable item: {msgs}", where=where,
                                    hint="use OpenAI chat lines ({\"messages\": [...]}) or eval "
                                    "items with a \"prompt\" or \"input\" text")
                sid = obj.get("id")
                sid = str(sid) if isinstance(sid, (str, int)) and not isinstance(sid, bool) else None
                yield Conversation(id=record_id(path.name, line_no, sid), messages=msgs,
                                   source=SourceRef(path.name, line_no, sid))


def decontaminate(records: Iterable[Conversation], index: EvalIndex
                  ) -> Iterator[Conversation | Reject]:
    """Yield records that pass and a Reject (stage "decontam") for each one that hits."""
    for conv in records:
        hit = index.check(conv)
        if hit is None:
            yield conv
        else:
            yield Reject(source=conv.source, stage=STAGE, reason=hit[0], detail=hit[1],
                         record_id=conv.id)

