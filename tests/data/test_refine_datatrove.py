"""`refine.executor: datatrove` (engine/data/refine_datatrove.py): the same version as the local
refine, byte for byte, with the in-process dedup in the driver and with datatrove's MinHash dedup
and sharded decontam index (the defaults; test_refine_datatrove_dedup.py has the harder dedup
pairs); ingest on the tasks (the merge, a bad input's error); a killed task resumes from
datatrove's completion markers; a sharded eval index gives the whole index's verdicts; config
errors.

The corpus is scripts/make_noisy_data.py's (five formats, planted PII, duplicates, junk, leaked
eval items) through configs/refine_noisy.yaml, small enough that the shards are dealt in blocks of
a few lines (BLOCK is lowered) so every task gets several blocks.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("datatrove", reason="datatrove (the optional 'distributed' extra) is not installed")

from datatrove.pipeline.base import PipelineStep  # noqa: E402

from datatrove.data import Document  # noqa: E402

from engine.config import DecontamSpec, DedupSpec, load_config, parse_config  # noqa: E402
from engine.config import refine as refine_config  # noqa: E402
from engine.data import refine_datatrove  # noqa: E402
from engine.data.refine import prepare_inputs, refine  # noqa: E402
from engine.data.refine_datatrove_decontam import DecontamCheck, EvalShards  # noqa: E402
from engine.data.refine_datatrove_ingest import ingest_parts  # noqa: E402
from engine.data.stages.decontam import EvalIndex  # noqa: E402
from engine.errors import ConfigError, DataError, StudioError  # noqa: E402
from engine.records import Conversation, Reject, SourceRef  # noqa: E402
from engine.registry import Registry  # noqa: E402
from engine.workspace import Workspace  # noqa: E402
from tests.data.fixtures.dedup.support_pairs import near_dup_pairs, templated_pairs  # noqa: E402
from tests.helpers import noisy_corpus, studio, studio_popen, wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl")
DATATROVE = "  executor: datatrove\n  datatrove: {tasks: 3, workers: 2}\n"
CARD_RUN_FIELDS = ("created_at", "ingest_started_at", "refine_config_sha256")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("noisy")
    noisy_corpus(base / "data" / "noisy", 120, 5)
    (base / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "refine_noisy.yaml", base / "configs" / "refine_noisy.yaml")
    return base


def _config(corpus: Path, edit: str) -> Path:
    config = corpus / "configs" / f"variant-{abs(hash(edit))}.yaml"
    text = (corpus / "configs" / "refine_noisy.yaml").read_text(encoding="utf-8")
    config.write_text(text.replace("refine:\n", "refine:\n" + edit, 1), encoding="utf-8")
    return config


def _workspace(tmp: Path) -> tuple[Workspace, Registry]:
    ws = Workspace(tmp / "ws").ensure()
    return ws, Registry(ws.registry_path)


@pytest.fixture(scope="module")
def local(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws, registry = _workspace(tmp_path_factory.mktemp("local"))
    return refine(load_config(_config(corpus, "")), ws, registry).path


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_datatrove, "BLOCK", 5)  # ~200 input lines: 13 blocks per task


def _card(path: Path) -> dict[str, Any]:
    card = json.loads((path / "card.json").read_text(encoding="utf-8"))
    for key in ("executor", "datatrove"):  # how it ran: the card says so
        card["refine_config"].pop(key)
    return {k: v for k, v in card.items() if k not in CARD_RUN_FIELDS}


def _assert_same_version(got: Path, want: Path) -> None:
    for name in OUTPUTS:
        assert (got / name).read_bytes() == (want / name).read_bytes(), name
    assert _card(got) == _card(want)  # counts, reasons, PII, residuals, hashes: all but the run
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in want.iterdir())


def _tmp_entries(ws: Workspace) -> list[str]:
    return sorted(p.name for p in ws.tmp_dir("default").iterdir())


@pytest.mark.parametrize("dedup", ["driver", "datatrove"])
def test_datatrove_refine_is_byte_identical_to_local(corpus: Path, local: Path, tmp_path: Path,
                                                     dedup: str) -> None:
    ws, registry = _workspace(tmp_path)
    logs = tmp_path / "datatrove-logs"  # kept: the phases that ran
    result = refine(load_config(_config(corpus, DATATROVE.replace(
        "workers: 2}", f"workers: 2, dedup: {dedup}, decontam: {dedup}, logging_dir: {logs}, "
        "decontam_shard_items: 4}"))), ws, registry)

    _assert_same_version(result.path, local)
    phases = sorted(p.parent.name for p in logs.rglob("completions"))
    assert phases == (["datatrove-logs", "decontam", "dedup-decisions", "ingest",
                       "minhash-buckets", "minhash-clusters"]
                      if dedup == "datatrove" else ["datatrove-logs", "ingest"])
    if dedup == "datatrove":  # the decontam tasks found the leaked eval items, not the driver
        stats = json.loads((logs / "decontam" / "stats.json").read_text())
        found = sum(s["stats"].get("contaminated", 0) for s in stats if "Eval overlap" in s["name"])
        rejects = (local / "rejects.jsonl").read_text().splitlines()
        assert found == sum('"stage":"decontam"' in r for r in rejects) > 0
        # the eval index went to shards of 4 items, each checked by every one of the 3 tasks
        decontam = json.loads((result.path / "card.json").read_text())["stages"]["decontam"]
        assert -(-decontam["eval_items_indexed"] // 4) >= 3
        assert len(list((logs / "decontam" / "completions").iterdir())) == 3
    ran = json.loads((result.path / "card.json").read_text())["refine_config"]
    assert (ran["executor"], ran["datatrove"]["tasks"], ran["datatrove"]["workers"]) == ("datatrove", 3, 2)
    assert registry.get_dataset("default", "brightwave-support", 1) is not None
    assert _tmp_entries(ws) == []  # the work directory (customer data) is gone
    # the corpus really went through three shards, and the refine really did something
    rejects = [json.loads(line) for line in (local / "rejects.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rejects} >= {"ingest", "quality", "dedup", "decontam"}
    written = "".join((local / f"{s}.jsonl").read_text(encoding="utf-8") for s in ("train", "val", "eval"))
    numbered = set(re.findall(r"<([A-Z]+)_(\d+)>", written))  # surrogates numbered over all shards
    assert len(numbered) >= 5 and max(int(n) for _, n in numbered) >= 3
    assert result.counts["input_records"] > 3 * 2 * 5


class FailOnce(PipelineStep):
    """Test fault: task `rank` raises half-way through its shard on the first attempt, after the
    other tasks completed; every task notes each run in `runs`."""

    name = "💥 fail once"

    def __init__(self, rank: int, runs: str, logs: str):
        super().__init__()
        self.rank, self.runs, self.logs = rank, runs, logs

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        with open(self.runs, "a", encoding="utf-8") as f:
            f.write(f"{rank}\n")
        marker = Path(self.runs + ".failed")
        for i, doc in enumerate(data):
            if rank == self.rank and i == 3 and not marker.exists():
                done = [Path(self.logs, "completions", f"{r:05d}") for r in range(world_size)
                        if r != rank]
                deadline = time.monotonic() + 60
                while not all(p.exists() for p in done) and time.monotonic() < deadline:
                    time.sleep(0.05)
                marker.touch()
                raise RuntimeError("injected task failure")
            yield doc


def test_a_killed_task_resumes_without_duplicates(corpus: Path, local: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs.txt"
    real = refine_datatrove.DatatroveJob.pipeline

    def with_fault(job: refine_datatrove.DatatroveJob) -> list[Any]:
        steps = real(job)
        return [*steps[:2], FailOnce(2, str(runs), str(job.logs)), *steps[2:]]

    monkeypatch.setattr(refine_datatrove.DatatroveJob, "pipeline", with_fault)
    ws, registry = _workspace(tmp_path)
    config = _config(corpus, DATATROVE)

    with pytest.raises(RuntimeError, match="injected task failure"):
        refine(load_config(config), ws, registry)
    assert registry.get_dataset("default", "brightwave-support", 1) is None
    assert not (ws.tenant_dir("default") / "datasets" / "brightwave-support").exists() or not any(
        (ws.tenant_dir("default") / "datasets" / "brightwave-support").iterdir())
    (work,) = [ws.tmp_dir("default") / n for n in _tmp_entries(ws)]  # kept for the resume
    assert sorted(p.name for p in (work / "logs" / "completions").iterdir()) == ["00000", "00001"]
    assert (work / "output" / "00002.jsonl").exists()  # the half-written task file
    assert sorted(runs.read_text().split()) == ["0", "1", "2"]
    # datatrove's log of the failed task holds its traceback, but no record text
    log = (work / "logs" / "logs" / "task_00002.log").read_text(encoding="utf-8")
    assert "injected task failure" in log
    truth = json.loads((corpus / "data" / "noisy" / "truth.json").read_text(encoding="utf-8"))
    planted = [v for values in truth["pii"].values() for v in values]
    assert planted and not [v for v in planted if v in log]
    assert "messages" not in log and "'record'" not in log

    result = refine(load_config(config), ws, registry)  # same config: resumes
    assert sorted(runs.read_text().split()) == ["0", "1", "2", "2"]  # only task 2 ran again
    _assert_same_version(result.path, local)
    assert _tmp_entries(ws) == []


def test_skip_completed_false_starts_afresh_and_keeps_nothing(corpus: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_datatrove.DatatroveJob, "execute",
                        lambda job: (_ for _ in ()).throw(KeyboardInterrupt()))
    ws, registry = _workspace(tmp_path)
    config = _config(corpus, "  executor: datatrove\n  datatrove: {tasks: 2, skip_completed: false}\n")
    with pytest.raises(KeyboardInterrupt):
        refine(load_config(config), ws, registry)
    assert _tmp_entries(ws) == []
    assert registry.get_dataset("default", "brightwave-support", 1) is None


def test_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corpus: Path) -> None:
    base = "kind: refine\nrefine:\n  dataset: d\n  inputs: [{path: a.jsonl, format: openai_jsonl}]\n"
    cfg = parse_config(base + "  executor: datatrove\n  datatrove: {tasks: 4, workers: 2}\n")
    assert (cfg.refine.datatrove.tasks, cfg.refine.datatrove.workers) == (4, 2)
    with pytest.raises(ConfigError, match=r"refine\.datatrove: executor 'slurm' needs partition"):
        parse_config(base + "  datatrove: {executor: slurm}\n")
    with pytest.raises(ConfigError, match=r"refine\.datatrove\.workers"):
        parse_config(base + "  datatrove: {workers: 0}\n")
    with pytest.raises(ConfigError, match=r"'workers' is for executor 'local'.*datatrove\.workers"):
        parse_config(base + "  executor: datatrove\n  workers: 2\n")

    monkeypatch.setattr(refine_config, "find_spec", lambda name: None)  # datatrove not installed
    with pytest.raises(ConfigError) as err:
        parse_config(base + "  executor: datatrove\n")
    assert "refine.executor" in str(err.value) and "pip install '.[distributed]'" in str(err.value)
    monkeypatch.undo()

    # an executor this release does not run yet: refused before anything is written
    ray = "  executor: datatrove\n  datatrove: {executor: ray}\n"
    ws, registry = _workspace(tmp_path)
    with pytest.raises(StudioError) as err:
        refine(load_config(_config(corpus, ray)), ws, registry)
    assert err.value.where == "refine.datatrove.executor"
    assert _tmp_entries(ws) == [] and list((ws.tenant_dir("default") / "datasets").iterdir()) == []
    # a banding the signature cannot fill: 30 bands of 5 need 150 of its 128 values
    wide = "  executor: datatrove\n  datatrove: {minhash: {num_buckets: 30}}\n"
    with pytest.raises(StudioError, match=r"30 buckets × 5 hashes need 150 MinHash values.*128"
                       ) as err:
        refine(load_config(_config(corpus, wide)), ws, registry)
    assert err.value.where == "refine.datatrove.minhash"
    assert _tmp_entries(ws) == [] and list((ws.tenant_dir("default") / "datasets").iterdir()) == []


def test_sigterm_mid_run_leaves_no_version_and_the_rerun_resumes(
        corpus: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The real `studio refine`, SIGTERM once the first of eight sequential tasks completed: exit
    143, no version, no registry row, the work directory kept; the same command again skips the
    completed task and writes the local refine's bytes."""
    big = tmp_path_factory.mktemp("big")
    noisy_corpus(big / "data" / "noisy", 800, 9)
    (big / "configs").mkdir()
    text = (ROOT / "configs" / "refine_noisy.yaml").read_text(encoding="utf-8")
    (big / "configs" / "local.yaml").write_text(text, encoding="utf-8")
    (big / "configs" / "dt.yaml").write_text(text.replace(
        "refine:\n", "refine:\n  executor: datatrove\n  datatrove: {tasks: 8, workers: 1}\n", 1),
        encoding="utf-8")
    env = {"STUDIO_WORKSPACE": str(tmp_path / "ws")}  # deep: the sockets need ipc_tempdir
    tmp = tmp_path / "ws" / "tenants" / "default" / "tmp"
    args = ["refine", str(big / "configs" / "dt.yaml"), "--json"]
    with open(tmp_path / "err1.txt", "w") as err:
        proc = studio_popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            assert wait_until(lambda: proc.poll() is not None or any(
                tmp.glob("refine-*/logs/completions/00000")), timeout=120)
            assert proc.poll() is None, (tmp_path / "err1.txt").read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 143
        finally:
            proc.kill()
    (work,) = tmp.glob("refine-*")
    done = sorted(p.name for p in (work / "logs" / "completions").iterdir())
    assert "00000" in done and "00007" not in done
    datasets = tmp_path / "ws" / "tenants" / "default" / "datasets"
    assert not datasets.exists() or not any(datasets.rglob("*.jsonl"))
    assert Registry(tmp_path / "ws" / "registry.sqlite").get_dataset(
        "default", "brightwave-support") is None

    again = studio(*args, cwd=tmp_path, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"Skipping {len(done)} already completed tasks" in again.stderr
    assert list(tmp.iterdir()) == []
    ws, registry = _workspace(tmp_path / "local")
    want = refine(load_config(big / "configs" / "local.yaml"), ws, registry).path
    _assert_same_version(Path(json.loads(again.stdout)["path"]), want)


def test_the_merge_refuses_a_missing_an_extra_or_a_foreign_line(corpus: Path, tmp_path: Path) -> None:
    """Two input files ingested by their own tasks (one line of bad JSON among them), dealt to 3
    tasks in blocks of 5: the merge gives every line back in input order, the ingest reject in
    its place; a task file with an extra, a missing or a swapped line is refused, naming it."""
    data = tmp_path / "data"
    data.mkdir()
    lines = [json.dumps({"messages": [
        {"role": "user", "content": f"My order {i} has not arrived, can you check?"},
        {"role": "assistant", "content": "Sorry about that! I will check the tracking now."}]})
        for i in range(31)]
    lines[7] = '{"messages": [oops'
    (data / "a.jsonl").write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")
    (data / "b.jsonl").write_text("\n".join(lines[20:]) + "\n", encoding="utf-8")
    config = data / "refine.yaml"
    config.write_text("kind: refine\nrefine:\n  dataset: d\n  inputs:\n"
                      "  - {path: a.jsonl, format: openai_jsonl}\n"
                      "  - {path: b.jsonl, format: openai_jsonl}\n"
                      "  executor: datatrove\n  datatrove: {tasks: 3, workers: 1}\n",
                      encoding="utf-8")
    cfg = load_config(config)
    ws, _ = _workspace(tmp_path)
    inputs = prepare_inputs(cfg, cfg.refine)
    job = refine_datatrove.DatatroveJob(cfg, cfg.refine, ws, inputs).open()
    noted: list[tuple[str, str]] = []
    job.note = lambda item, label: noted.append((type(item).__name__, label))
    job.execute()
    shards = sorted((job.work / "output").iterdir())
    assert [len(p.read_text().splitlines()) for p in shards] == [11, 10, 10]  # blocks of 5
    merged = list(job.merged())
    assert [(m.reason, m.source.line) if isinstance(m, Reject) else m.conv.source.line
            for m in merged] == [("bad_json", 8) if i == 7 else 1 + i % 20 for i in range(31)]
    assert noted == [("Reject" if i == 7 else "Conversation", "a.jsonl" if i < 20 else "b.jsonl")
                     for i in range(31)]

    shard = job.output_dir / "00001.jsonl"
    good = shard.read_bytes()
    lines_out = good.splitlines(keepends=True)
    for bad, what in ((good + lines_out[0], "more lines"), (b"".join(lines_out[:-1]), "missing lines"),
                      (b"".join([lines_out[1], lines_out[0], *lines_out[2:]]), "does not match")):
        shard.write_bytes(bad)
        with pytest.raises(StudioError, match=what) as err:
            list(job.merged())
        assert err.value.where == str(shard)
    job.close(succeeded=True)
    assert _tmp_entries(ws) == []


@pytest.mark.parametrize("part_mb", [None, 0.01])
def test_a_bad_input_stops_the_refine_with_its_file_line_and_field(tmp_path: Path,
                                                                   part_mb: float | None) -> None:
    """A DataError of a format reader, raised on an ingest task, reaches the user as the local
    refine would raise it (file, line, field; exit 2), with no version and nothing half-written.
    Read in spans of 10 KB (part_mb), no span alone can tell: the driver adds their counts up."""
    data = tmp_path / "data"
    data.mkdir()
    # past the 64 KiB that the up-front check reads, no line decodes: the reader finds out
    (data / "chats.jsonl").write_bytes(b"\n" * 70_000 + b"\xff\xfe{bad}\n" * 3)
    body = "kind: refine\nrefine:\n  dataset: d\n  inputs: [{path: chats.jsonl, format: openai_jsonl}]\n"
    (data / "local.yaml").write_text(body, encoding="utf-8")
    parts = f", ingest_part_mb: {part_mb}" if part_mb else ""
    (data / "dt.yaml").write_text(body + "  executor: datatrove\n  datatrove: {tasks: 2, "
                                  f"workers: 1{parts}}}\n", encoding="utf-8")
    ws, registry = _workspace(tmp_path / "ws")
    with pytest.raises(DataError) as local_err:
        refine(load_config(data / "local.yaml"), ws, registry)
    with pytest.raises(DataError) as err:
        refine(load_config(data / "dt.yaml"), ws, registry)
    assert str(err.value) == str(local_err.value) and "none of its 3 lines decode" in str(err.value)
    assert err.value.exit_code == 2
    (work,) = [ws.tmp_dir("default") / n for n in _tmp_entries(ws)]  # kept, as after any failure
    if part_mb is None:
        assert json.loads((work / "ingested" / "00000.error.json").read_text())["what"] == err.value.what
    else:  # 7 spans, the last with the 3 lines
        counts = [json.loads(p.read_text()) for p in sorted((work / "ingested").glob("*.lines.json"))]
        assert len(counts) == 7 and counts[-1] == {"decoded": 0, "undecodable": 3}
    assert registry.get_dataset("default", "d") is None


def test_json_lines_inputs_ingest_in_spans_with_the_local_bytes(corpus: Path, local: Path,
                                                                 tmp_path: Path) -> None:
    """With `ingest_part_mb` small, the two JSON Lines exports ingest as spans of about 10 KB of
    their lines on several tasks: the same version as the local refine (source lines, rejects, card counts)."""
    ws, registry = _workspace(tmp_path)
    logs = tmp_path / "logs"
    cfg = load_config(_config(corpus, DATATROVE.replace(
        "workers: 2}", f"workers: 2, ingest_part_mb: 0.01, logging_dir: {logs}}}")))
    result = refine(cfg, ws, registry)
    _assert_same_version(result.path, local)
    parts = ingest_parts(prepare_inputs(cfg, cfg.refine), 0.01)  # type: ignore[arg-type]
    cut = Counter(number for number, span in parts if span is not None)
    assert sorted(cut) == [1, 4] and min(cut.values()) >= 3  # the two JSON Lines exports, cut
    assert len(list((logs / "ingest" / "completions").iterdir())) == len(parts) == 3 + sum(cut.values())


def test_a_second_refine_of_the_same_config_is_refused_and_touches_nothing(corpus: Path,
                                                                           tmp_path: Path) -> None:
    cfg = load_config(_config(corpus, "  executor: datatrove\n  datatrove: {skip_completed: false}\n"))
    ws, _ = _workspace(tmp_path)
    first = refine_datatrove.DatatroveJob(cfg, cfg.refine, ws, []).open()
    (first.work / "mine").write_text("")
    second = refine_datatrove.DatatroveJob(cfg, cfg.refine, ws, [])
    with pytest.raises(StudioError, match="another refine of this config is running"):
        second.open()
    second.close(succeeded=False)  # as refine() does after a failed open
    assert (first.work / "mine").exists()
    first.close(succeeded=False)
    assert _tmp_entries(ws) == []


class CheckFailsOnce(refine_datatrove.DecontamCheck):
    """Test fault: the decontam task of rank 1 raises on its first run; every run is noted."""

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        runs = Path(self.index_dir).parents[3] / "decontam-runs.txt"  # the tenant's dir
        with open(runs, "a", encoding="utf-8") as f:
            f.write(f"{rank}\n")
        marker = runs.with_suffix(".failed")
        if rank == 1 and not marker.exists():  # after the other tasks completed
            done = Path(self.index_dir).parents[1] / "logs" / "decontam" / "completions"
            deadline = time.monotonic() + 60
            while not all((done / f"{r:05d}").exists() for r in (0, 2)) and time.monotonic() < deadline:
                time.sleep(0.05)
            marker.touch()
            raise RuntimeError("injected decontam failure")
        yield from super().run(data, rank, world_size)


def test_a_failed_decontam_task_resumes_alone(corpus: Path, local: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_datatrove, "DecontamCheck", CheckFailsOnce)
    ws, registry = _workspace(tmp_path)
    config = _config(corpus, DATATROVE)
    with pytest.raises(RuntimeError, match="injected decontam failure"):
        refine(load_config(config), ws, registry)
    (work,) = [ws.tmp_dir("default") / n for n in _tmp_entries(ws)]
    runs = ws.tenant_dir("default") / "decontam-runs.txt"
    assert sorted(runs.read_text().split()) == ["0", "1", "2"]
    (index,) = (work / "decontam" / "index").iterdir()  # the eval index: hashes, never text
    assert index.name == "index-00000.pkl" and b"messages" not in index.read_bytes()

    result = refine(load_config(config), ws, registry)
    assert sorted(runs.read_text().split()) == ["0", "1", "1", "2"]  # only task 1 ran again
    _assert_same_version(result.path, local)
    assert _tmp_entries(ws) == []


@pytest.mark.parametrize("per_shard", [1, 3, 50])
def test_a_sharded_eval_index_gives_the_whole_index_verdicts(tmp_path: Path, per_shard: int) -> None:
    """EvalShards and DecontamCheck (every index shard in turn) against EvalIndex.check on the
    same items: the same verdict and wording for every probe, ties (an eval item twice, in two
    shards) going to the first item, as in one index."""
    items = [a for a, _b, _ in near_dup_pairs(20, seed=51)] + [a for a, _ in templated_pairs(10, seed=52)]
    items += items[:6]  # the same eval items again, later: ties
    probes = ([b for _a, b, _ in near_dup_pairs(20, seed=51)] + [b for _a, b in templated_pairs(10, seed=52)]
              + items[:6] + [a for a, _ in templated_pairs(10, seed=53)])
    conv = lambda i, m, tag: Conversation(id=f"{tag}{i}", source=SourceRef("x", i), messages=m)  # noqa: E731
    spec, dedup = DecontamSpec(), DedupSpec()
    whole = EvalIndex(spec, dedup)
    shards = EvalShards(spec, dedup, tmp_path, per_shard)
    for i, m in enumerate(items):
        whole.add(conv(i, m, "e"))
        shards.add(conv(i, m, "e"))
    fan = shards.finish()
    assert fan == -(-len(items) // per_shard) and len(shards) == len(items)
    docs = [conv(i, m, "p") for i, m in enumerate(probes)]
    step = DecontamCheck(str(tmp_path), fan, str(tmp_path / "scratch"))
    lines = list(step.run([Document(text="", id=c.id, metadata={"record": c.to_dict()})
                           for c in docs], 0, 1))
    assert [d.metadata["id"] for d in lines] == [c.id for c in docs]
    assert list((tmp_path / "scratch").iterdir()) == []  # the words and signatures are gone
    got, hits = [], 0
    for c, line in zip(docs, lines):
        verdict = refine_datatrove.verdict(c, line.metadata)
        got.append((verdict.reason, verdict.detail) if isinstance(verdict, Reject) else None)
        hits += verdict is not c
    assert got == [whole.check(c) for c in docs]
    assert hits >= 26 and "with eval item e0" in str(got)  # hits, ties to the first copy
