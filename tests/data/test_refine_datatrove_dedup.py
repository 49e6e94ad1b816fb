"""Dedup on datatrove's MinHash stages (engine/data/refine_datatrove_dedup.py and
refine_datatrove_minhash.py) against the in-process dedup (stages/dedup.py): the same decisions
on hard pairs (byte for byte; the stated tolerance, ≥ 99 % of records, is the floor), exact dedup
byte for byte, templated pairs checked before clustering, the bucket check and the decision
phase on their own, and a resume after the clustering phase failed.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("datatrove", reason="datatrove (the optional 'distributed' extra) is not installed")

from datatrove.pipeline.base import PipelineStep  # noqa: E402

from engine.config import DedupSpec, load_config  # noqa: E402
from engine.data import refine_datatrove, refine_datatrove_dedup  # noqa: E402
from engine.data import refine_datatrove_minhash as minhash  # noqa: E402
from engine.data.refine import refine  # noqa: E402
from engine.data.minhash import lsh_params  # noqa: E402
from engine.data.stages.dedup import content_key, dedup, signer_for  # noqa: E402
from engine.errors import StudioError  # noqa: E402
from engine.records import Conversation, Reject, SourceRef  # noqa: E402
from engine.registry import Registry  # noqa: E402
from engine.workspace import Workspace  # noqa: E402
from tests.data.fixtures.dedup.support_pairs import near_dup_pairs, templated_pairs  # noqa: E402

PAIRS = 300  # of each kind
TOLERANCE = 0.99  # share of records whose dedup decision (kept, or dropped for which survivor) agrees


def _dedup_decisions(version: Path) -> dict[str, tuple[str, str] | None]:
    """record id → None (kept) or (reason, survivor id), for every record that reached dedup."""
    out: dict[str, tuple[str, str] | None] = {}
    for split in ("train", "val", "eval"):
        for line in (version / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            out[json.loads(line)["id"]] = None
    for line in (version / "rejects.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["stage"] == "dedup":
            out[r["record_id"]] = (r["reason"], r["detail"].split()[2])
    return out


def _refine(tmp: Path, config: Path) -> Path:
    ws = Workspace(tmp).ensure()
    return refine(load_config(config), ws, Registry(ws.registry_path)).path


@pytest.fixture(scope="module")
def hard_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Near-duplicate pairs (the copy must go) and templated pairs (both must stay), shuffled
    apart so the copies land on other tasks than their originals."""
    base = tmp_path_factory.mktemp("pairs")
    chats = [m for a, b, _ in near_dup_pairs(PAIRS, seed=3) for m in (a, b)]
    chats += [m for a, b in templated_pairs(PAIRS, seed=4) for m in (a, b)]
    random.Random(5).shuffle(chats)
    with open(base / "chats.jsonl", "w", encoding="utf-8") as f:
        for messages in chats:
            f.write(json.dumps({"messages": messages}) + "\n")
    return base


def _pairs_config(base: Path, name: str, extra: str, dedup: str = "") -> Path:
    config = base / f"{name}.yaml"
    config.write_text(
        "kind: refine\nrefine:\n  dataset: pairs\n"
        "  inputs: [{path: chats.jsonl, format: openai_jsonl}]\n"
        "  decontam: {enabled: false}\n" + dedup + extra, encoding="utf-8")
    return config


def test_datatrove_minhash_equals_the_in_process_dedup_on_hard_pairs(
        hard_pairs: Path, tmp_path: Path) -> None:
    local_version = _refine(tmp_path / "a", _pairs_config(hard_pairs, "local", ""))
    dt_version = _refine(tmp_path / "b", _pairs_config(
        hard_pairs, "dt", "  executor: datatrove\n  datatrove: {tasks: 4, workers: 2}\n"))
    local, dt = _dedup_decisions(local_version), _dedup_decisions(dt_version)

    assert set(local) == set(dt) and len(local) >= 4 * PAIRS - 20  # the same records reach dedup
    dropped = [k for k, v in local.items() if v is not None]
    assert len(dropped) >= 0.97 * PAIRS  # at least the copies (chats of other pairs can be too)
    agree = sum(local[k] == dt[k] for k in local) / len(local)
    print(f"\nagreement {agree:.4f} over {len(local)} records; dropped: in-process "
          f"{len(dropped)}, datatrove {sum(v is not None for v in dt.values())}")
    assert agree >= TOLERANCE
    for name in ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl"):
        assert (dt_version / name).read_bytes() == (local_version / name).read_bytes(), name


def _stats(folder: Path) -> dict[str, Any]:
    """A phase's merged datatrove stats: stat name → its total, or its totals (a metric)."""
    stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    return {k: v for step in stats for k, v in step["stats"].items()}


def _largest_chain(convs: list[Conversation], spec: DedupSpec) -> int:
    """The largest cluster union-find makes of the in-process LSH candidates, unchecked."""
    signer = signer_for(spec)
    rows = np.stack([signer.sign(c).hashvalues.copy() for c in convs])
    bands, width = lsh_params(spec.threshold, spec.num_perm)
    parent = list(range(len(convs)))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for b in range(bands):
        first: dict[bytes, int] = {}
        for i, row in enumerate(rows):
            j = first.setdefault(row[b * width:(b + 1) * width].tobytes(), i)
            parent[find(i)] = find(j)
    return max(Counter(find(i) for i in range(len(convs))).values())


def test_templated_replies_are_checked_before_they_are_clustered(tmp_path: Path) -> None:
    """Different problems answered with the same templated reply share LSH bands (Jaccard
    about 0.57): unchecked, union-find chains most of them into one cluster. Checked in the
    bucket phase, only pairs at the threshold reach clustering, so the decision phase holds
    small clusters, and the decisions are the in-process ones."""
    base = tmp_path / "data"
    base.mkdir()
    chats = [m for a, b in templated_pairs(100, seed=41) for m in (a, b)]
    with open(base / "chats.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"messages": m}) + "\n" for m in chats)
    logs = tmp_path / "logs"
    local = _refine(tmp_path / "a", _pairs_config(base, "local", ""))
    version = _refine(tmp_path / "b", _pairs_config(
        base, "dt", "  executor: datatrove\n"
        f"  datatrove: {{tasks: 2, workers: 2, logging_dir: {logs}}}\n"))
    for name in ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl"):
        assert (version / name).read_bytes() == (local / name).read_bytes(), name
    convs = [Conversation(id=str(i), source=SourceRef("x", i), messages=m)
             for i, m in enumerate(chats)]
    chained = _largest_chain(convs, DedupSpec())
    buckets, clusters = _stats(logs / "minhash-buckets"), _stats(logs / "minhash-clusters")
    print(f"\nunchecked: largest cluster {chained}; checked: {clusters['cluster_size']}")
    assert buckets["band_groups"] >= 100  # candidates there were
    assert chained >= len(chats) // 2
    assert clusters["cluster_size"]["max"] <= chained // 8


def test_exact_dedup_alone_is_byte_identical(hard_pairs: Path, tmp_path: Path) -> None:
    """dedup.near: false — the clusters are the groups of identical records, so every file is
    the in-process refine's, reject wording included."""
    chats = (hard_pairs / "chats.jsonl").read_text(encoding="utf-8").splitlines()
    copies = hard_pairs / "copies"
    copies.mkdir()
    rng = random.Random(9)  # exact copies, some re-cased and re-spaced (the content key folds them)
    extra = [line.replace("Thanks", "THANKS").replace(" ", "  ") if i % 2 else line
             for i, line in enumerate(rng.sample(chats, 150))]
    (copies / "chats.jsonl").write_text("\n".join(chats + extra) + "\n", encoding="utf-8")
    near_off = "  dedup: {near: false}\n"
    local = _refine(tmp_path / "a", _pairs_config(copies, "local", "", near_off))
    dt = _refine(tmp_path / "b", _pairs_config(
        copies, "dt", "  executor: datatrove\n  datatrove: {tasks: 3, workers: 2}\n", near_off))
    for name in ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl"):
        assert (dt / name).read_bytes() == (local / name).read_bytes(), name
    reasons = [json.loads(line)["reason"] for line in (dt / "rejects.jsonl").read_text().splitlines()]
    assert reasons.count("exact_duplicate") >= 150


def _table(tmp: Path, convs: list[Conversation], where: list[tuple[int, int]],
           spec: DedupSpec) -> Path:
    """Phase 1's record table for `convs` (record i is record where[i][1] of task where[i][0],
    at input position i), signed and keyed as the tasks sign and key them (no PII here)."""
    records = tmp / "records"
    records.mkdir()
    signer = signer_for(spec)
    dtype = minhash.row_dtype(spec.num_perm)
    tasks = 1 + max(t for t, _ in where)
    for t in range(tasks):
        mine = sorted((n, i) for i, (task, n) in enumerate(where) if task == t)
        assert [n for n, _ in mine] == list(range(len(mine)))
        rows = np.zeros(len(mine), dtype=dtype)
        for row, (_n, i) in zip(rows, mine):
            row["seq"], row["key"] = i, bytes.fromhex(content_key(convs[i]))[:16]
            row["sig"] = signer.sign(convs[i]).hashvalues
        rows.tofile(records / f"{t:05d}.bin")
        (records / f"{t:05d}.ids").write_text("".join(json.dumps(convs[i].id) + "\n"
                                                      for _n, i in mine), encoding="utf-8")
    return records


def _decided(tmp: Path, convs: list[Conversation], where: list[tuple[int, int]],
             clusters: dict[int, list[tuple[int, int]]], spec: DedupSpec,
             absorbed: dict[str, list[str]] | None = None) -> list[Conversation | Reject]:
    """Phase 4 on the given (record number, cluster id) pairs per task, then the driver."""
    records = _table(tmp, convs, where, spec)
    for t, pairs in clusters.items():
        np.asarray(pairs, dtype="<u4").tofile(tmp / f"{t:06d}.clusters")
    tasks = 1 + max(t for t, _ in where)
    step = minhash.Decide(str(records), str(tmp), str(tmp / "decisions"), spec, tasks)
    assert list(step.run(None, 0, 1)) == []
    reader = refine_datatrove_dedup.DecisionReader(tmp / "decisions", tasks)
    for conv, (rank, number) in zip(convs, where):
        reader.expect(rank, number, conv.id)
    got = list(reader(convs, spec, absorbed))
    assert reader.pending == {}
    return got


def _as_list(items: list[Conversation | Reject]) -> list[Any]:
    return [o.to_dict() if isinstance(o, Reject) else o.id for o in items]


def test_inside_a_cluster_the_in_process_rule_decides(tmp_path: Path) -> None:
    """One cluster holding a near-duplicate pair, a templated pair of two different problems
    and an exact copy, spread over two tasks: the copy and the re-sent ticket go, both
    templated chats stay, exactly as stages/dedup.py decides on the same records (wording and
    lineage included); a record in no cluster passes."""
    (a, a2, _), = near_dup_pairs(1, seed=11)
    (b, b2), = templated_pairs(1, seed=12)
    chats = [a, b, a2, b2, a2, templated_pairs(1, seed=13)[0][0]]
    convs = [Conversation(id=f"r{i}", source=SourceRef("chats.jsonl", i), messages=m)
             for i, m in enumerate(chats)]
    where = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]  # (task, record number)
    absorbed: dict[str, list[str]] = {}
    got = _decided(tmp_path, convs, where, {0: [(0, 3), (1, 3), (2, 3)], 1: [(0, 3), (1, 3)]},
                   DedupSpec(), absorbed)
    want_absorbed: dict[str, list[str]] = {}
    want = list(dedup(convs, DedupSpec(), want_absorbed))
    assert _as_list(got) == _as_list(want)
    assert [o.reason if isinstance(o, Reject) else o.id for o in got] == [
        "r0", "r1", "near_duplicate", "r3", "exact_duplicate", "r5"]
    assert absorbed == want_absorbed == {"r0": ["r2"], "r2": ["r4"]}

    # a decision no record claims (a stale or foreign file) stops the refine, naming the file
    reader = refine_datatrove_dedup.DecisionReader(tmp_path / "decisions", 2)
    for conv, (rank, number) in zip(convs[:2], [(0, 0), (0, 3)]):
        reader.expect(rank, number, conv.id)
    with pytest.raises(StudioError, match="decision for record 1 matches no record") as err:
        list(reader(convs[:2], DedupSpec()))
    assert err.value.where.endswith("decisions/00000.jsonl")


def test_verified_links_join_exactly_the_pairs_at_the_threshold() -> None:
    """A band group: an exact copy, a re-sent ticket and a templated pair of two different
    problems. The links join the copy and the re-sent ticket to their original (a spanning
    forest of the pairs at Jaccard ≥ 0.7), never the templated pair; without a threshold (the
    content keys of dedup.near: false) everything in the group is one part."""
    (a, a2, _), = near_dup_pairs(1, seed=31)
    (b, b2), = templated_pairs(1, seed=32)
    signer = signer_for(DedupSpec())
    rows = np.stack([signer.sign(Conversation(id=str(i), source=SourceRef("x", i), messages=m))
                     .hashvalues.copy() for i, m in enumerate([a, b, a, a2, b2])])
    jaccard = lambda i, j: np.count_nonzero(rows[i] == rows[j]) / 128  # noqa: E731
    assert jaccard(0, 3) >= 0.7 > jaccard(1, 4)
    links = minhash.verified_links(rows, 0.7)
    assert sorted(links) == [(0, 2), (0, 3)]
    assert minhash.verified_links(rows, None) == [(0, 1), (0, 2), (0, 3), (0, 4)]
    chain = np.stack([rows[0]] * 6)  # six identical rows: five links, no comparison
    assert minhash.verified_links(chain, 0.7) == [(0, j) for j in range(1, 6)]


class Runs(PipelineStep):
    """Test probe: appends the task's rank to `path` each time the task runs."""

    name = "📝 runs"

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{rank}\n")
        return data


class FailFirst(PipelineStep):
    """Test fault: the clustering task raises on its first run (a marker file says it ran)."""

    name = "💥 fail first"

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        if not Path(self.marker).exists():  # not a generator: it runs when the task starts
            Path(self.marker).touch()
            raise RuntimeError("injected clustering failure")
        return data


def test_a_failed_clustering_phase_resumes_there(hard_pairs: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    marker, runs = tmp_path / "failed", tmp_path / "bucket-runs"
    two, three = refine_datatrove_dedup.phase_two, refine_datatrove_dedup.phase_three
    monkeypatch.setattr(refine_datatrove, "phase_two", lambda *a: [*two(*a), Runs(str(runs))])
    monkeypatch.setattr(refine_datatrove, "phase_three",
                        lambda *a: [FailFirst(str(marker)), *three(*a)])
    config = _pairs_config(hard_pairs, "resume",
                           "  executor: datatrove\n  datatrove: {tasks: 3, workers: 2}\n")
    ws = Workspace(tmp_path / "ws").ensure()
    registry = Registry(ws.registry_path)
    with pytest.raises(RuntimeError, match="injected clustering failure"):
        refine(load_config(config), ws, registry)
    (work,) = ws.tmp_dir("default").iterdir()
    done = {p.parent.parent.name + "/" + p.name
            for p in (work / "logs").rglob("completions/*")}
    assert len(done) == 1 + 3 + 25  # ingest (1 input), phase 1 (3 tasks), 2 (25 bands); not 3
    assert sorted(map(int, runs.read_text().split())) == list(range(25))

    result = refine(load_config(config), ws, registry)
    assert sorted(map(int, runs.read_text().split())) == list(range(25))  # bands not rerun
    want = _refine(tmp_path / "clean", _pairs_config(hard_pairs, "local", ""))  # in-process
    for name in ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl"):
        assert (result.path / name).read_bytes() == (want / name).read_bytes(), name
    assert list(ws.tmp_dir("default").iterdir()) == []


def test_a_long_chain_decides_like_the_in_process_index(tmp_path: Path) -> None:
    """A cluster of 260 chats (templated pairs, re-sent tickets and exact copies) over three
    tasks, past the size where the in-process NearIndex grows its first block: every decision
    and its wording equals stages/dedup.py's on the same records."""
    rng = random.Random(21)
    chats = [m for a, b in templated_pairs(80, seed=22) for m in (a, b)]
    chats += [m for a, b, _ in near_dup_pairs(40, seed=23) for m in (a, b)]
    chats += rng.sample(chats, 20)
    rng.shuffle(chats)
    convs = [Conversation(id=f"r{i}", source=SourceRef("chats.jsonl", i), messages=m)
             for i, m in enumerate(chats)]
    where = [(i % 3, i // 3) for i in range(len(convs))]
    clusters = {t: [(n, 7) for tt, n in where if tt == t] for t in range(3)}
    got = _decided(tmp_path, convs, where, clusters, DedupSpec())
    want = list(dedup(convs, DedupSpec()))
    assert _as_list(got) == _as_list(want)
    kept = sum(isinstance(o, Conversation) for o in got)
    assert kept > 64 + 20  # a long chain: many survivors in one cluster
