"""Running an eval: items from a dataset split, generation through a backend, grading, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import EvalSpec
from engine.errors import StudioError
from engine.eval.items import load_items
from engine.eval.run import run_eval
from engine.models.resolve import resolve_model
from engine.models.store import import_model
from tests.helpers import make_project, refined_dataset


@pytest.fixture
def dataset(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> dict:
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "tiny")
    return refined_dataset(project, workspace, registry)


class ScriptedBackend:
    """Answers the reference for every other item: a known score to check the wiring against."""

    def __init__(self, items: list[dict]):
        self.answers = [it["reference"] if i % 2 == 0 else "no idea" for i, it in enumerate(items)]

    def generate(self, prompts, max_new_tokens, batch_size, progress=None, label="generate"):
        assert len(prompts) == len(self.answers)
        return self.answers


def test_items_are_cut_before_the_final_assistant_turn(dataset: dict) -> None:
    items = load_items(dataset, "eval")
    assert items
    for it in items:
        assert it["prompt"][-1]["role"] == "user"
        assert it["reference"].startswith("Queue: ")
        assert it["prompt"][0]["role"] == "system"
    assert load_items(dataset, "eval") == items  # deterministic
    assert len(load_items(dataset, "eval", limit=2)) == 2


def test_run_eval_writes_outputs_and_summary(dataset: dict, workspace, registry) -> None:
    spec = EvalSpec()
    items = load_items(dataset, "eval")
    res = run_eval(spec, workspace, registry, tenant="default", model_ref="tiny", dataset=dataset,
                   backend=ScriptedBackend(items))
    rows = [json.loads(l) for l in (res.path / "outputs.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == [it["item_id"] for it in items]
    assert [r["score"] for r in rows] == [1.0 if i % 2 == 0 else 0.0 for i in range(len(items))]
    summary = json.loads((res.path / "summary.json").read_text())
    assert summary["n"] == len(items) and summary["score"] == pytest.approx(res.score)
    assert res.score == pytest.approx(sum(r["score"] for r in rows) / len(rows))
    assert registry.get_eval(res.eval_id)["summary"]["n"] == len(items)
    assert not list(res.path.parent.glob("*.partial"))
    # a backend that cannot describe itself is never cached (nothing would identify its outputs)
    assert summary["cache"] == {"enabled": False, "hits": 0, "misses": len(items), "corrupt": 0}
    assert json.loads((res.path / "proof.json").read_text())["proof_sha256"] == summary["proof_sha256"]


def test_run_eval_with_the_real_tiny_model(dataset: dict, workspace, registry) -> None:
    spec = EvalSpec(limit=6, generation={"max_new_tokens": 5, "batch_size": 4})
    res = run_eval(spec, workspace, registry, tenant="default", model_ref="tiny", dataset=dataset)
    rows = [json.loads(l) for l in (res.path / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(isinstance(r["output"], str) for r in rows)
    uncached = spec.model_copy(update={"cache": False})  # generate again, not read the cache
    again = run_eval(uncached, workspace, registry, tenant="default", model_ref="tiny", dataset=dataset)
    rows2 = [json.loads(l) for l in (again.path / "outputs.jsonl").read_text().splitlines()]
    assert [r["output"] for r in rows] == [r["output"] for r in rows2]  # greedy = deterministic
    summaries = [json.loads((r.path / "summary.json").read_text()) for r in (res, again)]
    assert summaries[0]["cache"] == {"enabled": True, "hits": 0, "misses": 6, "corrupt": 0}
    assert summaries[1]["cache"]["enabled"] is False
    assert summaries[0]["proof_sha256"] == summaries[1]["proof_sha256"]
    assert (res.path / "proof.json").is_file()


def test_model_reference_errors(registry) -> None:
    with pytest.raises(StudioError, match="unknown model or run"):
        resolve_model(registry, "nothing", "default")
