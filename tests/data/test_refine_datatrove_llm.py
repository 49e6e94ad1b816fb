"""The LLM stages of `refine.executor: datatrove` (engine/data/refine_datatrove_llm.py): judge,
Q/A extraction, rewrite and preferences as datatrove phases, a model loaded per task, give the
local refine's version byte for byte (records, rejects, lineage, judge notes, preference rows,
card counts). Once on the real tiny model (random weights: judge scores and preference answers
vary, rewrites and Q/A are refused by their guards), once on a scripted model that writes Q/A
pairs and safe rewrites, so that a record's group of items (a transcript replaced by its pairs)
crosses the merge. A failed LLM task resumes alone. The progress bars: one per phase, each
reaching its tasks.

The corpus is scripts/make_noisy_data.py's through configs/refine_noisy.yaml; BLOCK is lowered
so that the shards are dealt in blocks of a few batches.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

pytest.importorskip("datatrove", reason="datatrove (the optional 'distributed' extra) is not installed")

from engine.config import load_config  # noqa: E402
from engine.data import refine_datatrove, refine_passes  # noqa: E402
from engine.data.refine import refine  # noqa: E402
from engine.data.refine_datatrove_llm import LlmStageStep  # noqa: E402
from engine.models.store import import_model  # noqa: E402
from engine.registry import Registry  # noqa: E402
from engine.workspace import Workspace  # noqa: E402
from tests.helpers import noisy_corpus, wait_until  # noqa: E402
from tests.scripted_model import ScriptedModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FILES = ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl",
         "judge.jsonl", "preferences.jsonl")
LLM = ("  llm:\n    model: tiny\n    batch_size: 3\n    max_new_tokens: 12\n"
       "    judge: {enabled: true, threshold: 2.867, reasons: true, reason_max_tokens: 6}\n"
       "    extract_qa: {enabled: true, min_turns: 3, keep_source: false}\n"
       "    rewrite: {enabled: true}\n"
       "    preferences: {enabled: true, max_new_tokens: 8}\n")
DATATROVE = "  executor: datatrove\n  datatrove: {tasks: 3, workers: 2}\n"
STAGES = ("judge", "extract_qa", "rewrite", "preferences")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("noisy-llm")
    noisy_corpus(base / "data" / "noisy", 100, 3)
    (base / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "refine_noisy.yaml", base / "configs" / "refine_noisy.yaml")
    return base


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_datatrove, "BLOCK", 5)  # LLM phases: blocks of 2 batches of 3


def _config(corpus: Path, edit: str) -> Path:
    config = corpus / "configs" / f"llm-{hashlib.sha256(edit.encode()).hexdigest()[:12]}.yaml"
    text = (corpus / "configs" / "refine_noisy.yaml").read_text(encoding="utf-8")
    config.write_text(text.replace("refine:\n", "refine:\n" + edit, 1) + LLM, encoding="utf-8")
    return config


def _workspace(tmp: Path, model_dir: Path) -> tuple[Workspace, Registry]:
    ws = Workspace(tmp / "ws").ensure()
    registry = Registry(ws.registry_path)
    import_model(ws, registry, str(model_dir), "tiny")
    return ws, registry


def _card(path: Path) -> dict[str, Any]:
    card = json.loads((path / "card.json").read_text(encoding="utf-8"))
    for key in ("executor", "datatrove"):
        card["refine_config"].pop(key)
    return {k: v for k, v in card.items()
            if k not in ("created_at", "ingest_started_at", "refine_config_sha256")}


def _assert_same_version(got: Path, want: Path) -> None:
    for name in FILES:
        assert (got / name).read_bytes() == (want / name).read_bytes(), name
    assert _card(got) == _card(want)
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in want.iterdir())


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_lineage_in_input_order(version: Path, config: Path) -> None:
    """lineage.jsonl follows the inputs (config order, then line; the mailbox's threads aside):
    also with preferences on, which takes the train records only while val records pass by."""
    labels = [Path(i.path).name for i in load_config(config).refine.inputs  # type: ignore[union-attr]
              if i.format != "email"]
    order = [(labels.index(e["source"]["file"]), e["source"]["line"])
             for e in _lines(version / "lineage.jsonl") if e["source"]["file"] in labels]
    assert len(order) > 20 and order == sorted(order)


def test_llm_stages_on_tasks_are_byte_identical_to_local(corpus: Path, tmp_path: Path,
                                                         tiny_model_dir: Path) -> None:
    ws, registry = _workspace(tmp_path / "local", tiny_model_dir)
    local = refine(load_config(_config(corpus, "")), ws, registry).path
    ws2, registry2 = _workspace(tmp_path / "dt", tiny_model_dir)
    logs = tmp_path / "logs"
    config = _config(corpus, DATATROVE.replace("workers: 2}", f"workers: 2, logging_dir: {logs}}}"))
    progress = Progress(console=Console(file=io.StringIO()), disable=True)
    with progress:
        got = refine(load_config(config), ws2, registry2, progress=progress).path

    _assert_same_version(got, local)
    bars = {t.description: (t.completed, t.total) for t in progress.tasks}
    assert {f"datatrove {p}" for p in ("ingest", "records", "decontam", "llm-judge",
                                        "llm-preferences")} <= set(bars)
    assert bars["datatrove ingest"] == (5, 5) and bars["datatrove llm-rewrite"] == (3, 3)
    assert all(done == total for done, total in bars.values())  # every phase's bar completed
    for stage in STAGES:  # each stage ran as a phase of 3 tasks
        assert len(list((logs / f"llm-{stage}" / "completions").iterdir())) == 3, stage
    stages = json.loads((got / "card.json").read_text())["stages"]
    notes = _lines(got / "judge.jsonl")
    assert stages["judge"]["rejected"] > 0 and stages["judge"]["out"] > 0  # scores vary
    assert len(notes) == stages["judge"]["in"] and all(n["reason"] is not None for n in notes)
    # the random model writes blanks: no Q/A, no rewrite, no preference pair, but each was asked
    assert stages["extract_qa"]["transcripts"] == stages["extract_qa"]["unparseable"] > 0
    assert stages["rewrite"]["kept_empty"] == stages["rewrite"]["in"] > 0
    assert stages["preferences"]["empty"] == len(_lines(got / "train.jsonl")) > 0
    _assert_lineage_in_input_order(got, config)
    assert list(ws2.tmp_dir("default").iterdir()) == []


def test_pairs_and_rewrites_cross_the_merge_in_their_place(corpus: Path, tmp_path: Path,
                                                           tiny_model_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_passes, "open_backend", lambda *a, **k: ScriptedModel())
    monkeypatch.setattr(refine_datatrove, "TASK_BACKEND", ScriptedModel)  # the tasks' too
    ws, registry = _workspace(tmp_path / "local", tiny_model_dir)
    local = refine(load_config(_config(corpus, "")), ws, registry).path
    ws2, registry2 = _workspace(tmp_path / "dt", tiny_model_dir)
    config = _config(corpus, DATATROVE)
    got = refine(load_config(config), ws2, registry2).path

    _assert_same_version(got, local)
    stages = json.loads((got / "card.json").read_text())["stages"]
    assert stages["extract_qa"]["pairs"] > 0 and stages["extract_qa"]["none"] > 0
    assert stages["extract_qa"]["rejected"] > 0  # transcripts replaced by their pairs
    assert stages["rewrite"]["rewritten"] > 0 and stages["rewrite"]["kept_empty"] > 0
    written = [r for s in ("train", "val", "eval") for r in _lines(got / f"{s}.jsonl")]
    pairs = [r for r in written if "extracted_from" in r["meta"]]
    assert pairs and any(r["meta"].get("rewritten") for r in pairs)
    lineage = {e["id"]: e for e in _lines(got / "lineage.jsonl")}
    assert all("rewrite" in lineage[r["id"]]["changed_by"] for r in written
               if r["meta"].get("rewritten"))
    _assert_lineage_in_input_order(got, config)


class FailsOnce(LlmStageStep):
    """Test fault: the rewrite's task 1 fails on its first run, after tasks 0 and 2 completed;
    every run is noted (beside the workspace, as the datatrove logs)."""

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        base = Path(self.model_dir).parents[2]  # <tmp>/dt: ws/models/tiny is the model
        with open(base / f"{self.stage}-runs.txt", "a", encoding="utf-8") as f:
            f.write(f"{rank}\n")
        marker = base / "rewrite.failed"
        if self.stage == "rewrite" and rank == 1 and not marker.exists():
            done = base / "logs" / "llm-rewrite" / "completions"
            wait_until(lambda: all((done / f"{r:05d}").exists() for r in (0, 2)), timeout=60)
            marker.touch()
            raise RuntimeError("injected LLM task failure")
        yield from super().run(data, rank, world_size)


def test_a_failed_llm_task_resumes_alone(corpus: Path, tmp_path: Path, tiny_model_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_passes, "open_backend", lambda *a, **k: ScriptedModel())
    monkeypatch.setattr(refine_datatrove, "TASK_BACKEND", ScriptedModel)
    monkeypatch.setattr(refine_datatrove, "LlmStageStep", FailsOnce)
    ws, registry = _workspace(tmp_path / "local", tiny_model_dir)
    local = refine(load_config(_config(corpus, "")), ws, registry).path
    ws2, registry2 = _workspace(tmp_path / "dt", tiny_model_dir)
    logs = tmp_path / "dt" / "logs"
    config = _config(corpus, DATATROVE.replace("workers: 2}", f"workers: 2, logging_dir: {logs}}}"))
    with pytest.raises(RuntimeError, match="injected LLM task failure"):
        refine(load_config(config), ws2, registry2)
    runs = {s: tmp_path / "dt" / f"{s}-runs.txt" for s in STAGES}
    assert sorted(runs["rewrite"].read_text().split()) == ["0", "1", "2"]
    assert not runs["preferences"].exists()
    (work,) = list(ws2.tmp_dir("default").glob("refine-*[!k]"))  # kept for the rerun
    assert (work / "llm-rewrite" / "input").is_dir()

    got = refine(load_config(config), ws2, registry2).path
    assert sorted(runs["rewrite"].read_text().split()) == ["0", "1", "1", "2"]  # task 1 alone
    assert sorted(runs["judge"].read_text().split()) == ["0", "1", "2"]  # not run again
    assert sorted(runs["preferences"].read_text().split()) == ["0", "1", "2"]
    _assert_same_version(got, local)
    assert list(ws2.tmp_dir("default").iterdir()) == []
