"""The dedup phases of `refine.executor: datatrove` after the signatures: their record table, the
verified bucket step (phase 2) and the decision step (phase 4).

Only engine/data/refine_datatrove_dedup.py imports this module. On disk, in the job's dedup/:

  records/NNNNN.bin   phase 1's record table of task N, one fixed row per signed record, in the
                      order datatrove numbers them (its doc_idx): the record's position in the
                      refine's input order (`seq`), 128 bits of its content key (computed with
                      keyed PII placeholders: equal exactly when the driver's are), and its
                      in-process MinHash signature (engine/data/minhash.py; with `dedup.near:
                      false`, the key's four 32-bit words). Read a row at a time.
  records/NNNNN.ids   the record ids, one JSON string per line, in the same order.
  buckets/            phase 2, one VerifiedBuckets task per LSH band: the band values are the
                      in-process index's (bands × rows of the same signature), so two records
                      share a datatrove bucket exactly when the in-process LSH makes them
                      candidates. Inside each group sharing a band, a pair is kept only at
                      estimated Jaccard ≥ dedup.threshold (the in-process check), and only the
                      pairs that join two parts of the group are written (a spanning forest):
                      datatrove's .dups format, so its MinhashDedupCluster (phase 3) reads them.
  decisions/NNNNN.jsonl  phase 4, one Decide task: the clustered records grouped by cluster, each
                      cluster decided in input order by a stages/dedup.py Deduper of its own, fed
                      the stored keys and signatures; one line per dropped record of task N
                      (its number, reason, detail, survivor), sorted.

Why the decisions equal the in-process ones: a record is dropped in-process only for an earlier
survivor that shares an LSH band with it at Jaccard ≥ threshold (or that has its content key), and
whether that one survived depends only on such pairs again. Every such pair is a verified pair
here, so both ends are in one cluster, and inside the cluster the Deduper sees the same candidates
in the same order. Memory: a bucket task holds one band group's signatures at a time; the decision
task holds four numbers per clustered record and one cluster's Deduper at a time.
"""

from __future__ import annotations

import heapq
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.data.minhash import Sketch
from engine.data.stages.dedup import Deduper, signer_for

from engine import offline  # noqa: E402

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

from datatrove.data import DocumentsPipeline  # noqa: E402
from datatrove.io import get_datafolder  # noqa: E402
from datatrove.pipeline.base import PipelineStep  # noqa: E402
from datatrove.pipeline.dedup.minhash import MinhashConfig, read_sigs  # noqa: E402

if TYPE_CHECKING:
    from engine.config import DedupSpec

_EDGE = struct.Struct("<4I")
_PAIR = struct.Struct("<II")


def row_dtype(width: int) -> np.dtype:
    """One record of the table: input position, content key, signature (`width` uint32)."""
    return np.dtype([("seq", "<u8"), ("key", "V16"), ("sig", "<u4", (width,))])


def signature_width(spec: "DedupSpec") -> int:
    return spec.num_perm if spec.near else 4


class RecordTables:
    """Every task's record table, read a row at a time (os.pread): a task's resident memory stays
    its own (a memory map would count every page of the tables it touched)."""

    def __init__(self, folder: Path, tasks: int, width: int):
        self.dtype = row_dtype(width)
        self.fds: list[int | None] = []
        for rank in range(tasks):
            path = folder / f"{rank:05d}.bin"
            size = path.stat().st_size if path.exists() else 0
            if size % self.dtype.itemsize:
                raise ValueError(f"{path}: not a whole number of records")
            self.fds.append(os.open(path, os.O_RDONLY) if size else None)

    def row(self, task: int, number: int) -> Any:
        fd, size = self.fds[task], self.dtype.itemsize
        data = os.pread(fd, size, number * size) if fd is not None else b""
        if len(data) != size:
            raise ValueError(f"record table of task {task} has no record {number}")
        return np.frombuffer(data, dtype=self.dtype)[0]

    def close(self) -> None:
        for fd in self.fds:
            if fd is not None:
                os.close(fd)
        self.fds = []


class _Forest:
    """Union-find over 0..n-1; `union` says whether it joined two parts."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


def verified_links(sigs: np.ndarray, threshold: float | None) -> list[tuple[int, int]]:
    """Pairs (i, j) of rows, i < j, that connect the rows of one band group the way the pairs at
    estimated Jaccard ≥ threshold connect them (a spanning forest: at most len-1 pairs). None:
    no check (the rows are content keys, all equal)."""
    n = len(sigs)
    if threshold is None:
        return [(0, j) for j in range(1, n)]
    first: dict[bytes, int] = {}
    links: list[tuple[int, int]] = []
    unique: list[int] = []
    for j in range(n):  # identical signatures: Jaccard 1, no comparison needed
        i = first.setdefault(sigs[j].tobytes(), j)
        if i != j:
            links.append((i, j))
        else:
            unique.append(j)
    if len(unique) < 2:
        return links
    rows = sigs[unique]
    width = rows.shape[1]
    forest = _Forest(len(unique))
    for b in range(1, len(unique)):
        equal = np.count_nonzero(rows[:b] == rows[b], axis=1)
        for a in np.flatnonzero(equal.astype(np.float64) / width >= threshold):
            if forest.union(int(a), b):
                links.append((unique[int(a)], unique[b]))
    return links


class VerifiedBuckets(PipelineStep):
    """Phase 2, task = band: datatrove's sorted bucket files merged (as its MinhashDedupBuckets
    merges them), each group of records sharing the band checked with their full signatures
    from the record table; the verified spanning pairs written as datatrove's .dups."""

    type = "🫂 - DEDUP"
    name = "🎯 MinHash verified buckets"

    def __init__(self, sigs: str, records: str, output: str, config: MinhashConfig,
                 tasks: int, width: int, threshold: float | None):
        super().__init__()
        self.sigs, self.output = get_datafolder(sigs), get_datafolder(output)
        self.records, self.config, self.tasks = Path(records), config, tasks
        self.width, self.threshold = width, threshold

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        assert data is None and world_size == self.config.num_buckets
        tables = RecordTables(self.records, self.tasks, self.width)
        files = self.sigs.list_files(subdirectory=f"bucket_{rank:03d}")
        readers = [read_sigs(f, i, self.config, lines_to_buffer=4096)
                   for i, f in enumerate(self.sigs.open_files(files, mode="rb"))]
        stems = [int(Path(name).name.removesuffix(".minhash.sig")) for name in files]
        try:
            with self.track_time(), self.output.open(f"{rank:05d}_00.dups", mode="wb") as out:
                for group in self._groups(readers):
                    self.stat_update("band_groups")
                    self.stat_update("band_group_size", value=len(group), unit="band_group")
                    members = [(stems[r], doc) for r, doc in group]
                    sigs = np.stack([tables.row(t, d)["sig"] for t, d in members])
                    for a, b in verified_links(sigs, self.threshold):
                        out.write(_EDGE.pack(*members[a], *members[b]))
                        self.stat_update("verified_pairs")
        finally:
            tables.close()
        yield from ()

    @staticmethod
    def _groups(readers: list[Iterator[Any]]) -> Iterator[list[tuple[int, int]]]:
        """(reader, doc) lists of the records sharing one band value, two or more."""
        heap = [s for s in (next(r, None) for r in readers) if s is not None]
        heapq.heapify(heap)
        group: list[tuple[int, int]] = []
        last = None
        while heap:
            v = heapq.heappop(heap)
            if v.sig != last:
                if len(group) > 1:
                    yield group
                group, last = [], v.sig
            group.append((v.reader_id, v.doc_id))
            nxt = next(readers[v.reader_id], None)
            if nxt is not None:
                heapq.heappush(heap, nxt)
        if len(group) > 1:
            yield group


def read_pairs(path: Path) -> np.ndarray:
    """A .clusters file (record number, cluster id) as an (n, 2) array (none: empty)."""
    if not path.exists():
        return np.zeros((0, 2), dtype=np.uint32)
    return np.fromfile(path, dtype="<u4").reshape(-1, 2)


class Decide(PipelineStep):
    """Phase 4, one task: every cluster of phase 3 decided with the in-process rule."""

    type = "🫂 - DEDUP"
    name = "⚖️ Dedup decisions"

    def __init__(self, records: str, clusters: str, output: str, spec: "DedupSpec", tasks: int):
        super().__init__()
        self.records, self.clusters, self.output = Path(records), Path(clusters), Path(output)
        self.spec, self.tasks = spec, tasks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        assert data is None and world_size == 1
        spec = self.spec
        tables = RecordTables(self.records, self.tasks, signature_width(spec))
        try:
            self._decide_all(tables)
        finally:
            tables.close()
        yield from ()

    def _decide_all(self, tables: RecordTables) -> None:
        spec = self.spec
        parts = [read_pairs(self.clusters / f"{t:06d}.clusters") for t in range(self.tasks)]
        task = np.concatenate([np.full(len(p), t, dtype=np.uint32) for t, p in enumerate(parts)])
        doc = np.concatenate([p[:, 0] for p in parts])
        cluster = np.concatenate([p[:, 1] for p in parts])
        seq = np.array([tables.row(int(t), int(d))["seq"] for t, d in zip(task, doc)],
                       dtype=np.uint64)
        order = np.lexsort((seq, cluster))  # by cluster, then input order
        signer = signer_for(spec) if spec.near else None
        # per dropped record: (task, doc) → (reason, detail, survivor (task, doc))
        dropped: dict[tuple[int, int], tuple[str, str, tuple[int, int]]] = {}
        with self.track_time():
            start = 0
            while start < len(order):
                end = start + 1
                while end < len(order) and cluster[order[end]] == cluster[order[start]]:
                    end += 1
                self._decide(order[start:end], task, doc, tables, Deduper(spec, signer=signer),
                             dropped)
                self.stat_update("clusters")
                start = end
            self._write(dropped)

    def _decide(self, members: np.ndarray, task: np.ndarray, doc: np.ndarray,
                tables: RecordTables, deduper: Deduper,
                dropped: dict[tuple[int, int], tuple[str, str, tuple[int, int]]]) -> None:
        """One cluster, in input order; ids in the Deduper are "task:doc" until written."""
        for i in members:
            t, d = int(task[i]), int(doc[i])
            row = tables.row(t, d)
            key = int.from_bytes(row["key"].tobytes(), "big") if self.spec.exact else None
            sketch = Sketch(np.array(row["sig"], dtype=np.uint32)) if self.spec.near else None
            hit = deduper.decide(f"{t}:{d}", key, sketch)  # type: ignore[arg-type]
            if hit is not None:
                reason, detail, survivor = hit
                st, sd = survivor.split(":")
                dropped[(t, d)] = (reason, detail, (int(st), int(sd)))
            self.stat_update("decided")

    def _write(self, dropped: dict[tuple[int, int], tuple[str, str, tuple[int, int]]]) -> None:
        """decisions/NNNNN.jsonl, the survivors named by their record ids."""
        wanted: dict[int, set[int]] = {}
        for _reason, _detail, (t, d) in dropped.values():
            wanted.setdefault(t, set()).add(d)
        names: dict[tuple[int, int], str] = {}
        for t, docs in wanted.items():
            with open(self.records / f"{t:05d}.ids", encoding="utf-8") as f:
                for d, line in enumerate(f):
                    if d in docs:
                        names[(t, d)] = json.loads(line)
        self.output.mkdir(parents=True, exist_ok=True, mode=0o700)
        by_task: dict[int, list[tuple[int, str, str, str]]] = {}
        for (t, d), (reason, detail, survivor) in dropped.items():
            name = names[survivor]
            worded = detail.replace(f"{survivor[0]}:{survivor[1]}", name, 1)  # "task:doc" → id
            by_task.setdefault(t, []).append((d, reason, worded, name))
        for t in range(self.tasks):
            with open(self.output / f"{t:05d}.jsonl", "w", encoding="utf-8") as f:
                for d, reason, detail, name in sorted(by_task.get(t, [])):
                    f.write(json.dumps({"n": d, "reason": reason, "detail": detail,
                                        "survivor": name}, ensure_ascii=False) + "\n")
                    self.stat_update("dropped")
