"""A weighted mixture of training sources (`train.datasets`): deterministic given the seed, in the
configured proportions, and recorded source by source in the run's manifest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from engine.config import load_config
from engine.config.train import MixSource
from engine.models.store import import_model
from engine.train.data import TrainingData, mix
from engine.train.sft import train_sft
from tests.helpers import make_project, refined_dataset


def _source(name: str, n: int) -> TrainingData:
    rows = [{"messages": [{"role": "user", "content": f"{name}-{i}"},
                          {"role": "assistant", "content": "ok"}]} for i in range(n)]
    return TrainingData(rows, rows[:2], {"ref": f"{name}@v1", "sha256": name * 8,
                                         "files": {"train.jsonl": name}})


def _names(data: TrainingData) -> list[str]:
    return [r["messages"][0]["content"] for r in data.train]


def test_same_seed_same_mixture_and_the_weights_hold() -> None:
    parts = [_source("a", 2000), _source("b", 2000)]
    first = mix(parts, [1.0, 3.0], seed=7)
    assert _names(first) == _names(mix(parts, [1.0, 3.0], seed=7))  # deterministic
    assert _names(first) != _names(mix(parts, [1.0, 3.0], seed=8))  # and seeded
    counts = Counter(n.split("-")[0] for n in _names(first))
    assert counts["b"] == 2000  # first_exhausted: the mixture ends when b runs out
    assert counts["a"] / sum(counts.values()) == pytest.approx(0.25, abs=0.03)
    assert len(first.val) == 4  # the val splits, concatenated
    info = first.info
    assert [(s["ref"], s["weight"], s["probability"]) for s in info["sources"]] == [
        ("a@v1", 1.0, 0.25), ("b@v1", 3.0, 0.75)]
    assert [s["mixed_rows"] for s in info["sources"]] == [counts["a"], counts["b"]]
    assert info["ref"] == "a@v1+b@v1" and set(info["files"]) == {"a@v1/train.jsonl", "b@v1/train.jsonl"}
    assert info["sha256"] != mix(parts, [1.0, 2.0], seed=7).info["sha256"]  # the weights count


def test_all_exhausted_repeats_the_smaller_source() -> None:
    mixed = mix([_source("a", 50), _source("b", 500)], [1.0, 1.0], seed=1,
                stopping_strategy="all_exhausted")
    counts = Counter(n.split("-")[0] for n in _names(mixed))
    assert counts["b"] >= 500 and counts["a"] > 50


def test_a_mixture_run_records_every_source(tmp_path: Path, workspace, registry,
                                            tiny_model_dir: Path) -> None:
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    dataset = refined_dataset(project, workspace, registry)
    file = project / "extra.jsonl"
    file.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(30)))
    cfg = load_config(project / "configs" / "sft_lora.yaml")
    cfg.train.dataset = None
    cfg.train.datasets = [MixSource(dataset=dataset["name"], weight=2.0),
                          MixSource(data=str(file), weight=1.0)]
    cfg.train.max_steps, cfg.train.save_steps = 2, None
    res = train_sft(cfg, workspace, registry)
    manifest = json.loads((res.path / "manifest.json").read_text())
    sources = manifest["dataset"]["sources"]
    assert [(s["ref"], s["weight"]) for s in sources] == [
        (f"{dataset['name']}@v{dataset['version']}", 2.0), ("extra.jsonl", 1.0)]
    assert sources[0]["sha256"] == dataset["sha256"] and sources[1]["rows"] == 30
    assert manifest["dataset"]["mixture"]["seed"] == cfg.seed
    assert registry.get_run(res.run_id)["dataset"] == manifest["dataset"]["ref"]
