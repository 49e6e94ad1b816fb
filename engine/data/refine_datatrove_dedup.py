"""Exact and near dedup of `refine.executor: datatrove` on datatrove's own MinHash stages.

Only engine/data/refine_datatrove.py imports this module (datatrove is the optional extra).
With `refine.datatrove.dedup: datatrove` (the default) datatrove finds the candidates in three
phases, on disk, and the driver decides inside each candidate cluster, streaming:

  phase 1, each task   DedupFeatures → Signature (a MinhashDedupSignature): after a task's
                       per-record stages, every record that passed quality gets the features the
                       in-process dedup signs (engine/data/minhash.py: character 5-shingles of the
                       customer's and the agent's side, the customer's counted `user_weight`
                       times, digit runs folded). PII values are first replaced by placeholders
                       numbered per record: the digit folding turns <EMAIL_1> and <EMAIL_12> into
                       the same text, so the features equal those of the in-process refine, which
                       sees the refine-wide numbering. datatrove hashes them into num_buckets ×
                       hashes_per_bucket MinHash values (by default the in-process index's bands
                       for dedup.threshold: 25 × 5) and sorts them per bucket on disk.
  phase 2, a task      MinhashDedupBuckets: two records sharing all the hashes of a bucket are a
           per bucket  candidate pair.
  phase 3, one task    MinhashDedupCluster: union-find over the pairs; per task file, the
                       (record number, cluster id) and cluster sizes, sorted.
  driver               ClusterDecider, in input order (after the refine-wide PII numbering): a
                       record in no cluster has no candidate and survives; inside a cluster the
                       in-process rule decides with the in-process signature: an exact copy of an
                       earlier member is its `exact_duplicate`, else the earliest survivor of the
                       cluster sharing an LSH band with it at estimated Jaccard ≥ threshold makes
                       it a `near_duplicate` (worded as in-process). Exact copies share every hash,
                       so they always meet in one cluster: exact dedup needs no pass of its own.
                       A cluster's state (a Deduper: keys, survivors' signatures) is dropped once
                       its last member has passed, so the driver holds the open clusters only (on
                       templated data at scale union-find chains most records into one
                       cluster: 899,880 of 900,037 on the generated 1 M corpus, see
                       docs/refine-scale.md; checking pairs before the union would bound it).

datatrove's own MinhashDedupFilter is not used: it keeps the union-find root of each cluster and
drops every other member, so one chain of templated chats (A~B, B~C) would lose C although C is
nothing like A. Checked inside the cluster, the decisions equal the in-process ones wherever
datatrove's banding put every pair the in-process LSH would have found into one cluster; the
agreement is measured in tests/data/test_refine_datatrove_dedup.py and docs/refine-scale.md.
Memory: a cluster's members are held until it closes, so the driver's peak is the largest set of
open clusters (on templated data, chains make some clusters large), not the corpus.

With `dedup.near: false` the features are the record's content key alone (two 64-bit halves):
the clusters are then exactly the groups of identical records.
"""

from __future__ import annotations

import hashlib
import resource
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.data.minhash import features, sides
from engine.data.stages import pii
from engine.data.stages.dedup import Deduper, content_key, signer_for
from engine.records import Conversation, Reject

from engine import offline  # noqa: E402

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

from datatrove.data import DocumentsPipeline  # noqa: E402
from datatrove.pipeline.base import PipelineStep  # noqa: E402
from datatrove.pipeline.dedup.minhash import (  # noqa: E402
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupSignature,
)
from datatrove.utils.hashing import HashConfig  # noqa: E402
from datatrove.utils.word_tokenizers import WordTokenizer  # noqa: E402

if TYPE_CHECKING:
    from engine.config import DedupSpec, PiiSpec

SEP = "\x00"  # between the sides (and the key) in a Document's text for the signature step
_PAIR = struct.Struct("<II")


def minhash_config(num_buckets: int, hashes_per_bucket: int) -> MinhashConfig:
    """32-bit hash values (half the disk of 64); the seed is datatrove's, the same on all tasks."""
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


def feature_text(conv: Conversation, findings: list[pii.Finding], dedup: "DedupSpec",
                 spec: "PiiSpec") -> str:
    """What DedupFeatures puts in a Document's text: the two normalized sides, and with
    `near: false` the content key."""
    if not dedup.near:
        keyed = _KeyedSurrogates(numbered=spec.surrogates, keep_originals=False)
        return content_key(keyed.apply(conv, findings)[0])
    local = pii.Surrogates(numbered=spec.surrogates, keep_originals=False)  # numbered per record
    user, assistant = sides(local.apply(conv, findings)[0].messages)
    return user + SEP + assistant


class DedupFeatures(PipelineStep):
    """After OutcomeWriter: one Document per record that passed quality (in the order the driver
    numbers them), its text the dedup features; everything else stops here."""

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
                doc.text = feature_text(conv, findings, self.dedup, self.pii)
            self.stat_update("signed")
            yield doc


class Signature(MinhashDedupSignature):
    """datatrove's signature step on our features instead of its word n-grams."""

    def __init__(self, output_folder: str, config: MinhashConfig, dedup: "DedupSpec"):
        super().__init__(output_folder, config=config, language=WhitespaceTokenizer())
        self.shingle, self.user_weight, self.near = dedup.shingle, dedup.user_weight, dedup.near

    def get_shingles(self, text: str) -> np.ndarray:
        if not self.near:  # the content key's two halves: only identical records collide
            key = bytes.fromhex(text)
            out = np.frombuffer(key[:16], dtype="<u8").astype(np.uint64)
        else:
            user, assistant = text.split(SEP)
            out = np.asarray(features(user, assistant, self.shingle, self.user_weight),
                             dtype=np.uint64)
        return out.reshape((-1, 1))


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


def phase_two(sigs: str, buckets: str, config: MinhashConfig) -> list[Any]:
    return [MinhashDedupBuckets(input_folder=sigs, output_folder=buckets, config=config),
            PeakMemory()]


def phase_three(buckets: str, clusters: str, config: MinhashConfig) -> list[Any]:
    return [MinhashDedupCluster(input_folder=buckets, output_folder=clusters, config=config,
                                save_cluster_id=True, save_cluster_size=True),
            PeakMemory()]


def _pairs(path: Path) -> Iterator[tuple[int, int]]:
    """(record number, value) pairs of a .clusters or .sizes file (none if it does not exist)."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        while chunk := f.read(_PAIR.size * 4096):
            yield from _PAIR.iter_unpack(chunk)


class _TaskClusters:
    """One task's (record number → cluster id, size), read forward as its records arrive."""

    def __init__(self, folder: Path, rank: int):
        self._ids = _pairs(folder / f"{rank:06d}.clusters")
        self._sizes = _pairs(folder / f"{rank:06d}.sizes")
        self._next = next(self._ids, None)

    def lookup(self, number: int) -> tuple[int, int] | None:
        while self._next is not None and self._next[0] < number:
            self._next = next(self._ids, None)
            next(self._sizes, None)
        if self._next is None or self._next[0] != number:
            return None
        size = next(self._sizes)
        cluster, self._next = self._next[1], next(self._ids, None)
        if size[0] != number:
            raise ValueError(f"cluster files of task disagree at record {number}")
        return cluster, size[1]


class ClusterDecider:
    """The driver's dedup: RefineRun's `dedup_runner`, fed the records (after the PII numbering)
    in input order. `expect(rank, number, id)` is called as the merge hands each record on.

    datatrove's clusters are the candidates; inside a cluster the in-process rule decides: each
    open cluster has its own stages/dedup.py Deduper (one signer shared by all), so an exact copy
    of an earlier member is its `exact_duplicate` and the earliest LSH candidate among the
    cluster's survivors at `dedup.threshold` makes a record a `near_duplicate`, worded the same.
    A record in no cluster has no candidate and survives. A cluster's Deduper is dropped when its
    last member has passed."""

    def __init__(self, spec: "DedupSpec", clusters_dir: Path, tasks: int):
        self.spec, self.folder, self.count = spec, clusters_dir, tasks
        self.tasks: list[_TaskClusters] = []
        self.pending: dict[str, tuple[int, int]] = {}  # record id → (task, record number)
        self.open: dict[int, tuple[Deduper, list[int]]] = {}  # cluster → (deduper, [members left])
        self.signer = signer_for(spec) if spec.near else None

    def expect(self, rank: int, number: int, record_id: str) -> None:
        self.pending[record_id] = (rank, number)

    def __call__(self, records: Iterable[Conversation], spec: "DedupSpec",
                 clusters: dict[str, list[str]] | None = None) -> Iterator[Conversation | Reject]:
        for conv in records:  # the first one arrives after phase 3 is done: open its files then
            if not self.tasks:
                self.tasks = [_TaskClusters(self.folder, r) for r in range(self.count)]
            rank, number = self.pending.pop(conv.id)
            hit = self.tasks[rank].lookup(number)
            if hit is None:
                yield conv
                continue
            cluster, size = hit
            deduper, left = self.open.get(cluster) or self.open.setdefault(
                cluster, (Deduper(self.spec, clusters, self.signer), [size]))
            left[0] -= 1
            if left[0] <= 0:
                del self.open[cluster]
            yield deduper.push(conv)
