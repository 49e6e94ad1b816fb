"""MinHash signatures and the LSH index of support conversations, shared by dedup and decontam.

What a signature is made of (tuned for 40–2000 character support chats, see stages/dedup.py):
  * two sides per conversation: the user turns and the assistant turns (system turns are left
    out), each casefolded, whitespace-collapsed and with every digit run replaced by "0", so a
    re-sent ticket with another order number is the same text; PII placeholders such as
    <EMAIL_3> stay in the text like any other word;
  * character 5-shingles of each side, hashed in one vectorised pass over the code points
    (a multilinear hash with fixed odd 64-bit multipliers, top 32 bits kept), no Python call per
    shingle;
  * the user side counts `user_weight` times: each user shingle enters the set that many times
    under different salts, so the set's Jaccard is a weighted Jaccard in which the customer's
    words weigh more than the agent's templated reply. Salts also keep the roles apart: the same
    words said by the customer and by the agent are different features.
The features go through datasketch's MinHash (update_batch on one reused sketch, affine32 scheme
in datasketch 2) — MinHash.bulk makes a copy per text and was ~10% slower on 500-byte chats.

The index is datasketch's MinHashLSH with its per-bucket `set`s swapped for a compact table
(an int per bucket, a list only where buckets collide) and without its key→bands table (we never
remove keys): ~8 KB per record of band tables shrinks to ~2.1 KB. Signatures live in numpy blocks
of 4096 rows (no per-record objects, unlike a LeanMinHash each): 512 bytes per record at
num_perm 128 with datasketch ≥ 2 (uint32 hash values); texts are never stored. LSH candidates are
verified with the MinHash Jaccard estimate (the same count of equal hash values that
MinHash.jaccard computes, done for all candidates in one numpy call), so LSH false positives never
drop a record. Bands and rows are chosen so a pair at the threshold becomes a candidate with
probability ≥ 98.5 % (`lsh_params`).
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

from engine.records import Conversation

SEED = 1  # permutation seed of every signature: signatures are comparable across runs
_BLOCK = 4096  # signature rows per numpy block
_RNG = np.random.RandomState(20261101)
_MULT = _RNG.randint(0, 1 << 62, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_SALTS = _RNG.randint(0, 1 << 32, size=65, dtype=np.uint64).astype(np.uint32)  # [0] = assistant
_DIGITS = re.compile(r"\d+")


def normalize_side(texts: Iterable[str]) -> str:
    """Casefolded, whitespace-collapsed, every run of digits → '0'."""
    return _DIGITS.sub("0", " ".join(" ".join(t.split()) for t in texts).casefold())


def sides(messages: Sequence[dict[str, str]]) -> tuple[str, str]:
    """(user side, assistant side) of a conversation, normalized for shingling."""
    return (normalize_side(m["content"] for m in messages if m["role"] == "user"),
            normalize_side(m["content"] for m in messages if m["role"] == "assistant"))


def window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every window of `n` consecutive ids (one window if there are fewer)."""
    ids = ids.astype(np.uint64, copy=False)
    count = len(ids) - n + 1
    if count <= 0:
        if not len(ids):
            return np.zeros(0, dtype=np.uint64)
        ids, count = np.concatenate([ids, np.zeros(n - len(ids), dtype=np.uint64)]), 1
    h = ids[:count] * _MULT[0]
    for j in range(1, n):
        h += ids[j:j + count] * _MULT[j]
    return h


def shingle_hashes(text: str, k: int) -> np.ndarray:
    """uint32 hashes of the character k-shingles of `text` (empty text → none)."""
    if not text:
        return np.zeros(0, dtype=np.uint32)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return (window_hashes(codes, k) >> np.uint64(32)).astype(np.uint32)


def features(user: str, assistant: str, k: int, user_weight: int) -> list[int]:
    """The salted shingle hashes of one conversation (user shingles `user_weight` times)."""
    hu, ha = shingle_hashes(user, k), shingle_hashes(assistant, k)
    parts = [hu ^ _SALTS[1 + j] for j in range(user_weight)] + [ha ^ _SALTS[0]]
    out = np.concatenate(parts)
    if not len(out):  # an empty conversation is one (constant) feature, never an empty sketch
        out = _SALTS[:1]
    return out.tolist()


class Signer:
    """Computes signatures with one reused datasketch MinHash (not thread-safe)."""

    def __init__(self, num_perm: int, shingle: int, user_weight: int):
        if not 1 <= user_weight < len(_SALTS):
            raise ValueError(f"user_weight must be in 1..{len(_SALTS) - 1}")
        if not 1 <= shingle <= len(_MULT):
            raise ValueError(f"shingle must be in 1..{len(_MULT)}")
        self.num_perm, self.shingle, self.user_weight = num_perm, shingle, user_weight
        # the features are already 32-bit hashes: the hash function is the identity
        self.minhash = MinHash(num_perm=num_perm, seed=SEED, hashfunc=operator.index)

    def update(self, user: str, assistant: str) -> MinHash:
        """The reused sketch, now holding the signature of (user, assistant)."""
        m = self.minhash
        m.clear()
        m.update_batch(features(user, assistant, self.shingle, self.user_weight))
        return m

    def sign(self, conv: Conversation) -> MinHash:
        return self.update(*sides(conv.messages))

    def signatures(self, items: Iterable[Conversation | str]) -> Iterator[np.ndarray]:
        """A copy of the hash values per item; a plain string counts as a user turn."""
        for item in items:
            m = self.update(normalize_side([item]), "") if isinstance(item, str) else self.sign(item)
            yield m.hashvalues.copy()


def lsh_params(threshold: float, num_perm: int, recall: float = 0.985) -> tuple[int, int]:
    """(bands, rows): the most selective banding (largest rows) that still makes a pair with
    Jaccard == threshold a candidate with probability >= recall."""
    best = (num_perm // 2, 2) if num_perm >= 4 else (2, 1)
    for rows in range(1, num_perm // 2 + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold ** rows) ** bands >= recall:
            best = (bands, rows)
    return best


def _band_key(data: bytes) -> int:
    """One int per band (xor-fold of its hash values, which are already uniformly random)."""
    x = int.from_bytes(data, "little")
    key = 0
    while x:
        key ^= x & 0xFFFFFFFFFFFFFFFF
        x >>= 64
    return key


class _BandTable:
    """One band's buckets: band key → record number, or a list of them when several share it."""

    def __init__(self) -> None:
        self._d: dict[int, Any] = {}

    def insert(self, key: int, *vals: int, buffer: bool = False) -> None:
        for val in vals:
            cur = self._d.get(key)
            if cur is None:
                self._d[key] = val
            elif type(cur) is list:
                cur.append(val)
            else:
                self._d[key] = [cur, val]

    def get(self, key: int) -> Sequence[int]:
        cur = self._d.get(key)
        if cur is None:
            return ()
        return cur if type(cur) is list else (cur,)

    def size(self) -> int:
        return len(self._d)


class _NoKeys:
    """Stands in for MinHashLSH's key → band-keys table, needed only to remove keys."""

    def insert(self, key: Any, *vals: Any, buffer: bool = False) -> None:
        pass

    def __contains__(self, key: Any) -> bool:
        return False


class CompactLSH(MinHashLSH):
    """MinHashLSH with compact in-memory band tables; keys are record numbers (ints)."""

    def __init__(self, num_perm: int, params: tuple[int, int]):
        super().__init__(num_perm=num_perm, params=params, hashfunc=_band_key)
        self.hashtables = [_BandTable() for _ in range(self.b)]  # type: ignore[list-item]
        self.keys = _NoKeys()  # type: ignore[assignment]


class Sketch:
    """Stored hash values standing in for a MinHash where NearIndex reads one (its values and its
    length; no permutations to set up)."""

    def __init__(self, values: np.ndarray):
        self.hashvalues = values

    def __len__(self) -> int:
        return len(self.hashvalues)


class NearIndex:
    """Signatures of indexed records plus their LSH; `best` finds the closest indexed record."""

    def __init__(self, num_perm: int, threshold: float):
        self.num_perm, self.threshold = num_perm, threshold
        self.params = lsh_params(threshold, num_perm)
        self.lsh = CompactLSH(num_perm, self.params)
        self._blocks: list[np.ndarray] = []
        self.count = 0

    def add(self, m: MinHash) -> int:
        """Index the signature in `m`; returns its record number (0, 1, 2, …)."""
        i = self.count
        if not self._blocks:  # small first: many indexes (one per dedup cluster) stay tiny
            self._blocks.append(np.empty((16, self.num_perm), dtype=m.hashvalues.dtype))
        elif i == len(self._blocks[0]) and i < _BLOCK:  # the first block doubles up to _BLOCK
            grown = np.empty((min(2 * i, _BLOCK), self.num_perm), dtype=m.hashvalues.dtype)
            grown[:i] = self._blocks[0]
            self._blocks[0] = grown
        elif i % _BLOCK == 0 and i >= _BLOCK:
            self._blocks.append(np.empty((_BLOCK, self.num_perm), dtype=m.hashvalues.dtype))
        self._blocks[-1][i % _BLOCK] = m.hashvalues
        self.lsh.insert(i, m, check_duplication=False)
        self.count += 1
        return i

    def row(self, i: int) -> np.ndarray:
        return self._blocks[i // _BLOCK][i % _BLOCK]

    def best(self, m: MinHash) -> tuple[int, float] | None:
        """(record number, estimated Jaccard) of the most similar indexed record at or above the
        threshold; ties go to the earliest record. None when there is none."""
        if not self.count:
            return None
        cands = sorted(self.lsh.query(m))
        if not cands:
            return None
        rows = np.stack([self.row(i) for i in cands])
        equal = np.count_nonzero(rows == m.hashvalues, axis=1)
        top = int(np.argmax(equal))  # first maximum = earliest record
        jaccard = float(equal[top]) / self.num_perm
        return (cands[top], jaccard) if jaccard >= self.threshold else None

    def nbytes(self) -> int:
        """Approximate bytes held: signature blocks + band tables (dict slots, keys, lists)."""
        total = sum(b.nbytes for b in self._blocks)
        for t in self.lsh.hashtables:
            d = t._d  # type: ignore[attr-defined]
            total += sys.getsizeof(d) + 32 * len(d)
            total += sum(sys.getsizeof(v) for v in d.values() if type(v) is list)
        return total
