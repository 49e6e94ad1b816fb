"""Dedup stage: exact duplicates by a normalised content hash; the first occurrence survives.

The key is sha256 over the roles and contents of all messages, casefolded and with all whitespace
collapsed, so copies that differ only in case or spacing are one cluster. Later copies become
`exact_duplicate` rejects naming the survivor's id; clusters are kept for lineage.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from engine.config import DedupSpec
from engine.hashing import sha256_json
from engine.records import Conversation, Reject

STAGE = "dedup"


def content_key(conv: Conversation) -> str:
    return sha256_json([[m["role"], " ".join(m["content"].split()).casefold()]
                        for m in conv.messages])


def dedup(records: Iterable[Conversation], spec: DedupSpec,
          clusters: dict[str, list[str]] | None = None) -> Iterator[Conversation | Reject]:
    """Yield survivors and duplicate rejects in input order.

    `clusters`, when given, receives survivor id -> ids of the records dropped as its duplicates
    (only for survivors that had any).
    """
    if not spec.exact:
        yield from records
        return
    seen: dict[str, str] = {}
    for conv in records:
        key = content_key(conv)
        survivor = seen.get(key)
        if survivor is None:
            seen[key] = conv.id
            yield conv
            continue
        if clusters is not None:
            clusters.setdefault(survivor, []).append(conv.id)
        yield Reject(source=conv.source, stage=STAGE, reason="exact_duplicate",
                     detail=f"duplicate of {survivor}", record_id=conv.id)
