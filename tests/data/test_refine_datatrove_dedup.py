"""Dedup on datatrove's MinHash stages (engine/data/refine_datatrove_dedup.py) against the
in-process dedup (stages/dedup.py): the same decisions on hard pairs within the stated tolerance
(≥ 99 % of records), exact dedup byte for byte, the driver's cluster rules, and a resume after
the clustering phase failed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("datatrove", reason="datatrove (the optional 'distributed' extra) is not installed")

from datatrove.pipeline.base import PipelineStep  # noqa: E402

from engine.config import DedupSpec, load_config  # noqa: E402
from engine.data import refine_datatrove, refine_datatrove_dedup  # noqa: E402
from engine.data.refine import refine  # noqa: E402
from engine.data.stages.dedup import dedup  # noqa: E402
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


def test_datatrove_minhash_agrees_with_the_in_process_dedup_on_hard_pairs(
        hard_pairs: Path, tmp_path: Path) -> None:
    local = _dedup_decisions(_refine(tmp_path / "a", _pairs_config(hard_pairs, "local", "")))
    dt = _dedup_decisions(_refine(tmp_path / "b", _pairs_config(
        hard_pairs, "dt", "  executor: datatrove\n  datatrove: {tasks: 4, workers: 2}\n")))

    assert set(local) == set(dt) and len(local) >= 4 * PAIRS - 20  # the same records reach dedup
    dropped = [k for k, v in local.items() if v is not None]
    assert len(dropped) >= 0.97 * PAIRS  # at least the copies (chats of other pairs can be too)
    agree = sum(local[k] == dt[k] for k in local) / len(local)
    print(f"\nagreement {agree:.4f} over {len(local)} records; dropped: in-process "
          f"{len(dropped)}, datatrove {sum(v is not None for v in dt.values())}")
    assert agree >= TOLERANCE


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


def _write_pairs(path: Path, pairs: list[tuple[int, int]]) -> None:
    path.write_bytes(b"".join(refine_datatrove_dedup._PAIR.pack(*p) for p in pairs))


def test_inside_a_cluster_the_in_process_rule_decides(tmp_path: Path) -> None:
    """One transitive cluster (as union-find makes them) holding a near-duplicate pair, a
    templated pair of two different problems and an exact copy, spread over two tasks: the
    copy and the re-sent ticket go, both templated chats stay, exactly as stages/dedup.py
    decides on the same records; a record in no cluster passes; nothing stays held."""
    (a, a2, _), = near_dup_pairs(1, seed=11)
    (b, b2), = templated_pairs(1, seed=12)
    chats = [a, b, a2, b2, a2, templated_pairs(1, seed=13)[0][0]]
    convs = [Conversation(id=f"r{i}", source=SourceRef("chats.jsonl", i), messages=m)
             for i, m in enumerate(chats)]
    where = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]  # (task, record number)
    _write_pairs(tmp_path / "000000.clusters", [(0, 3), (1, 3), (2, 3)])
    _write_pairs(tmp_path / "000000.sizes", [(0, 5), (1, 5), (2, 5)])
    _write_pairs(tmp_path / "000001.clusters", [(0, 3), (1, 3)])
    _write_pairs(tmp_path / "000001.sizes", [(0, 5), (1, 5)])
    decide = refine_datatrove_dedup.ClusterDecider(DedupSpec(), tmp_path, tasks=2)
    for conv, (rank, number) in zip(convs, where):
        decide.expect(rank, number, conv.id)
    absorbed: dict[str, list[str]] = {}
    got = list(decide(convs, DedupSpec(), absorbed))

    want_absorbed: dict[str, list[str]] = {}
    want = list(dedup(convs, DedupSpec(), want_absorbed))
    assert [o.to_dict() if isinstance(o, Reject) else o.id for o in got] == [
        o.to_dict() if isinstance(o, Reject) else o.id for o in want]
    assert [o.reason if isinstance(o, Reject) else o.id for o in got] == [
        "r0", "r1", "near_duplicate", "r3", "exact_duplicate", "r5"]
    assert absorbed == want_absorbed == {"r0": ["r2"], "r2": ["r4"]}
    assert decide.open == {} and decide.pending == {}  # every cluster closed: nothing held


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
    assert len(done) == 3 + 25  # phase 1 (3 tasks) and 2 (25 bands) completed, 3 did not
    assert sorted(map(int, runs.read_text().split())) == list(range(25))

    result = refine(load_config(config), ws, registry)
    assert sorted(map(int, runs.read_text().split())) == list(range(25))  # bands not rerun
    want = _refine(tmp_path / "clean", config)
    for name in ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl"):
        assert (result.path / name).read_bytes() == (want / name).read_bytes(), name
    assert list(ws.tmp_dir("default").iterdir()) == []


def test_a_long_chain_decides_like_the_in_process_index(tmp_path: Path) -> None:
    """A cluster of 260 chats (templated pairs, re-sent tickets and exact copies), past the size
    where the cluster switches from a list to the in-process LSH index: every decision and its
    wording equals stages/dedup.py's on the same records."""
    rng = random.Random(21)
    chats = [m for a, b in templated_pairs(80, seed=22) for m in (a, b)]
    chats += [m for a, b, _ in near_dup_pairs(40, seed=23) for m in (a, b)]
    chats += rng.sample(chats, 20)
    rng.shuffle(chats)
    convs = [Conversation(id=f"r{i}", source=SourceRef("chats.jsonl", i), messages=m)
             for i, m in enumerate(chats)]
    _write_pairs(tmp_path / "000000.clusters", [(i, 0) for i in range(len(convs))])
    _write_pairs(tmp_path / "000000.sizes", [(i, len(convs)) for i in range(len(convs))])
    decide = refine_datatrove_dedup.ClusterDecider(DedupSpec(), tmp_path, tasks=1)
    for i, conv in enumerate(convs):
        decide.expect(0, i, conv.id)
    got = list(decide(convs, DedupSpec()))
    want = list(dedup(convs, DedupSpec()))
    assert [o.to_dict() if isinstance(o, Reject) else o.id for o in got] == [
        o.to_dict() if isinstance(o, Reject) else o.id for o in want]
    kept = sum(isinstance(o, Conversation) for o in got)
    assert kept > 64 + 20  # a long chain: many survivors in one cluster
    assert decide.open == {}
