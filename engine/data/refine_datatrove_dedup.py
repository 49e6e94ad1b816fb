"""Exact and near dedup of `refine.executor: datatrove` on datatrove's own MinHash stages.

Only engine/data/refine_datatrove.py imports this module (datatrove is the optional extra).
With `refine.datatrove.dedup: datatrove` (the default), four phases on disk decide every record
exactly as the in-process dedup (stages/dedup.py) would, and the driver only reads the decisions:

  phase 1, each task   DedupFeatures → Signature (a MinhashDedupSignature): after a task's
                       per-record stages, every record that passed quality is signed with the
                       in-process signature (engine/data/minhash.py: character 5-shingles of the
                       customer's and the agent's side, the customer's counted `user_weight`
                       times, digit runs folded, datasketch's MinHash). PII values are first
                       replaced by placeholders numbered per record: digit folding turns
                       <EMAIL_1> and <EMAIL_12> into the same text, so the signature equals the
                       in-process one, which sees the refine-wide numbering. datatrove writes it
                       cut into the in-process LSH bands (25 × 5 at the defaults), one sorted
                       file per band; the record table keeps the whole signature, the content key
                       (with keyed placeholders, equal exactly when the driver's are) and the
                       record's place in the input order.
  phase 2, a task      VerifiedBuckets: the records sharing a band (the in-process LSH
           per band    candidates) are checked with their whole signatures; the pairs at estimated
                       Jaccard ≥ threshold that join two parts of the group are written.
  phase 3, one task    datatrove's MinhashDedupCluster: union-find over the verified pairs.
  phase 4, one task    Decide: each cluster in input order through a Deduper of its own; the
                       dropped records, their reason and survivor, per task file.
  driver               DecisionReader: reads them forward as the records arrive (after the
                       refine-wide PII numbering) and words the rejects.

Why this equals the in-process dedup, and what each phase holds in memory, is in
refine_datatrove_minhash.py. Without the check in phase 2 (datatrove's MinhashDedupBuckets),
templated replies chain nearly every chat into one cluster: 899,880 of 900,037 records on the
generated 1 M corpus (docs/refine-scale.md), and deciding that cluster needs the whole index in
one place. datatrove's own MinhashDedupFilter is not used either: it keeps one record per
cluster, so a chain A~B~C loses C although C is nothing like A.

With `dedup.near: false` the signature is the record's content key alone (four 32-bit words in
one band): the clusters are then exactly the groups of identical records.
"""

from __future__ import annotations

import hashlib
import json
import resource
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from engine.data.minhash import sides
from engine.data.refine_datatrove_minhash import (
    Decide,
    VerifiedBuckets,
    row_dtype,
    signature_width,
)
from engine.data.stages import pii
from engine.data.stages.dedup import STAGE, content_key, signer_for
from engine.errors import StudioError
from engine.records import Conversation, Reject

from engine import offline  # noqa: E402

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

from datatrove.data import DocumentsPipeline  # noqa: E402
from datatrove.pipeline.base import PipelineStep  # noqa: E402
from datatrove.pipeline.dedup.minhash import (  # noqa: E402
    MinhashConfig,
    MinhashDedupCluster,
    MinhashDedupSignature,
)
from datatrove.utils.hashing import HashConfig  # noqa: E402
from datatrove.utils.word_tokenizers import WordTokenizer  # noqa: E402

if TYPE_CHECKING:
    from engine.config import DedupSpec, PiiSpec

SEP = "\x00"  # between the two sides in a Document's text for the signature step


def minhash_config(num_buckets: int, hashes_per_bucket: int) -> MinhashConfig:
    """datatrove's config for the bucket files: 32-bit values, as the in-process signature's
    (datatrove's own hashing and seed go unused: Signature hands it the values)."""
    return MinhashConfig(num_buckets=num_buckets, hashes_per_bucket=hashes_per_bucket,
                         hash_config=HashConfig(precision=32, hash_fc="sha1"))


class WhitespaceTokenizer(WordTokenizer):
    """A word tokenizer that needs nothing: datatrove's English one would load spaCy. The
    signature step never uses it (our features replace its shingles); the MinHash benchmark
    shingles datatrove's way with it."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


class _KeyedSurrogates(pii.Surrogates):
    """Placeholders named by a hash of (type, canonical value) instead of a refine-wide number:
    two records get the same text here exactly when they get the same text from the driver's
    numbering, so the content key can be computed on a task (`dedup.near: false`)."""

    def placeholder(self, kind: str, value: str) -> str:
        if not self.numbered:
            return pii.TOKENS[kind]
        return f"<{kind.upper()}_{hashlib.sha256(f'{kind}{SEP}{value}'.encode()).hexdigest()[:24]}>"


def keyed_content_key(conv: Conversation, findings: list[pii.Finding], spec: "PiiSpec") -> str:
    """The content key (stages/dedup.py) with keyed placeholders: equal exactly when the driver's
    is."""
    keyed = _KeyedSurrogates(numbered=spec.surrogates, keep_originals=False)
    return content_key(keyed.apply(conv, findings)[0])


def feature_text(conv: Conversation, findings: list[pii.Finding], dedup: "DedupSpec",
                 spec: "PiiSpec") -> str:
    """What DedupFeatures puts in a Document's text: the two normalized sides (nothing with
    `near: false`: the content key is the signature then)."""
    if not dedup.near:
        return ""
    local = pii.Surrogates(numbered=spec.surrogates, keep_originals=False)  # numbered per record
    user, assistant = sides(local.apply(conv, findings)[0].messages)
    return user + SEP + assistant


class DedupFeatures(PipelineStep):
    """After OutcomeWriter: one Document per record that passed quality (in the order the driver
    numbers them), its text the dedup features and its metadata what the record table keeps;
    everything else stops here."""

    type = "🫂 - DEDUP"
    name = "🧬 Dedup features"

    def __init__(self, dedup: "DedupSpec", spec: "PiiSpec"):
        super().__init__()
        self.dedup, self.pii = dedup, spec

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data or ():
            out = doc.metadata.get("outcome")
            if out is None or out["reject"] is not None:
                continue
            with self.track_time():
                conv = Conversation.from_dict(out["record"])
                findings = [pii.Finding(*f) for f in out["findings"]]
                doc.metadata = {"id": conv.id, "key": keyed_content_key(conv, findings, self.pii),
                                "seq": int(doc.id)}  # BlockReader: the place in input order
                doc.text = feature_text(conv, findings, self.dedup, self.pii)
            self.stat_update("signed")
            yield doc


class Signature(MinhashDedupSignature):
    """datatrove's signature step (its bucket files, sorted on disk) on the in-process signature
    (engine/data/minhash.py) cut into the in-process LSH bands, so datatrove's buckets are the
    in-process index's; also writes the record table (refine_datatrove_minhash.py)."""

    def __init__(self, output_folder: str, records: str, config: MinhashConfig,
                 dedup: "DedupSpec"):
        super().__init__(output_folder, config=config, language=WhitespaceTokenizer())
        self.records, self.dedup = Path(records), dedup
        self.signer = signer_for(dedup) if dedup.near else None
        self.dtype = row_dtype(signature_width(dedup))
        self._current = np.zeros(0, dtype=np.uint32)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> None:
        """datatrove's run (it consumes the Documents and yields none), on the tabled stream."""
        self.records.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.records / f"{rank:05d}.bin", "wb") as table, \
                open(self.records / f"{rank:05d}.ids", "w", encoding="utf-8") as ids:
            super().run(self._tabled(data or (), table, ids), rank, world_size)

    def _tabled(self, data: DocumentsPipeline, table: IO[bytes], ids: IO[str]
                ) -> DocumentsPipeline:
        """Each Document's table row, written as datatrove's step takes the Document (its
        get_shingles, called next, hands datatrove the signature computed here)."""
        row = np.zeros(1, dtype=self.dtype)
        for doc in data:
            key = bytes.fromhex(doc.metadata["key"])[:16]
            if self.signer is not None:
                user, assistant = doc.text.split(SEP)
                self._current = self.signer.update(user, assistant).hashvalues.astype(np.uint32)
            else:  # the content key's four 32-bit words: only identical records collide
                self._current = np.frombuffer(key, dtype=">u4").astype(np.uint32)
            row["seq"], row["key"], row["sig"] = doc.metadata["seq"], key, self._current
            table.write(row.tobytes())
            ids.write(json.dumps(doc.metadata["id"], ensure_ascii=False) + "\n")
            yield doc

    def get_shingles(self, text: str) -> np.ndarray:
        return self._current

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        rows = self.config.hashes_per_bucket
        return [shingles[b * rows:(b + 1) * rows].tolist() for b in range(self.config.num_buckets)]


class PeakMemory(PipelineStep):
    """Last step of every phase: the worker process's peak RSS so far, in datatrove's stats
    (`peak_rss_mb`; a worker runs several tasks one after another, so this is per worker)."""

    type = "📊 - STATS"
    name = "📈 Peak memory"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data or ():
            yield doc
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        self.stat_update("peak_rss_mb", value=int(peak_mb), unit="task")


def phase_two(dedup: Path, config: MinhashConfig, spec: "DedupSpec", tasks: int) -> list[Any]:
    return [VerifiedBuckets(str(dedup / "signatures"), str(dedup / "records"),
                            str(dedup / "buckets"), config, tasks, signature_width(spec),
                            spec.threshold if spec.near else None),
            PeakMemory()]


def phase_three(dedup: Path, config: MinhashConfig) -> list[Any]:
    return [MinhashDedupCluster(input_folder=str(dedup / "buckets"),
                                output_folder=str(dedup / "clusters"), config=config,
                                save_cluster_id=True),
            PeakMemory()]


def phase_four(dedup: Path, spec: "DedupSpec", tasks: int) -> list[Any]:
    return [Decide(str(dedup / "records"), str(dedup / "clusters"), str(dedup / "decisions"),
                   spec, tasks),
            PeakMemory()]


class _TaskDecisions:
    """One task's decisions/NNNNN.jsonl, read forward as its records arrive."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, encoding="utf-8") if path.exists() else None
        self._next = self._read()

    def _read(self) -> dict[str, Any] | None:
        line = self._file.readline() if self._file is not None else ""
        return json.loads(line) if line else None

    def lookup(self, number: int) -> dict[str, Any] | None:
        if self._next is not None and self._next["n"] < number:
            raise StudioError(f"the dedup decision for record {self._next['n']} matches no "
                              "record of its task", where=str(self.path),
                              hint="rerun with refine.datatrove.skip_completed: false")
        if self._next is None or self._next["n"] != number:
            return None
        found, self._next = self._next, self._read()
        return found

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class DecisionReader:
    """The driver's dedup: RefineRun's `dedup_runner`, fed the records (after the PII numbering)
    in input order. `expect(rank, number, id)` is called as the merge hands each record on.

    Phase 4 decided every record (refine_datatrove_minhash.py); the driver only reads its
    decisions forward, task by task, and words the rejects: it holds nothing per record but the
    lineage (`clusters`: survivor → the ids it absorbed, as in-process)."""

    def __init__(self, decisions: Path, tasks: int):
        self.folder, self.count = decisions, tasks
        self.tasks: list[_TaskDecisions] = []
        self.pending: dict[str, tuple[int, int]] = {}  # record id → (task, record number)

    def expect(self, rank: int, number: int, record_id: str) -> None:
        self.pending[record_id] = (rank, number)

    def __call__(self, records: Iterable[Conversation], spec: "DedupSpec",
                 clusters: dict[str, list[str]] | None = None) -> Iterator[Conversation | Reject]:
        try:
            for conv in records:  # the first one arrives after phase 4 is done: open files then
                if not self.tasks:
                    self.tasks = [_TaskDecisions(self.folder / f"{r:05d}.jsonl")
                                  for r in range(self.count)]
                rank, number = self.pending.pop(conv.id)
                found = self.tasks[rank].lookup(number)
                if found is None:
                    yield conv
                    continue
                if clusters is not None:
                    clusters.setdefault(found["survivor"], []).append(conv.id)
                yield Reject(source=conv.source, stage=STAGE, reason=found["reason"],
                             detail=found["detail"], record_id=conv.id)
        finally:
            for task in self.tasks:
                task.close()
