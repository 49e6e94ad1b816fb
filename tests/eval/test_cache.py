"""Generation cache: a repeated eval generates nothing; any change of model, item or settings misses;
corrupt rows are regenerated, never trusted."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from engine.config import EvalSpec
from engine.eval.cache import CacheStats, GenerationCache, cached_generate
from engine.generation.transformers_backend import TransformersBackend
from engine.eval.items import load_items
from engine.eval.run import run_eval
from engine.models.resolve import resolve_model
from engine.models.store import import_model
from tests.helpers import make_project, refined_dataset

SPEC = {"limit": 6, "generation": {"max_new_tokens": 4, "batch_size": 4}}


class CountingBackend(TransformersBackend):
    """The real transformers backend, counting the prompts it is asked to generate."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.prompts = 0

    def generate(self, prompts, *args, **kwargs):
        self.calls += 1
        self.prompts += len(prompts)
        return super().generate(prompts, *args, **kwargs)


@pytest.fixture
def dataset(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> dict:
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "tiny")
    return refined_dataset(project, workspace, registry)


def _backend(registry, ref: str) -> CountingBackend:
    model = resolve_model(registry, ref, "default")
    return CountingBackend(model.model_dir, model.adapter_dir, threads=1)


def _eval(workspace, registry, dataset, backend, ref: str = "tiny", **spec):
    merged = {**SPEC, **spec, "generation": {**SPEC["generation"], **spec.get("generation", {})}}
    res = run_eval(EvalSpec(**merged), workspace, registry, tenant="default", model_ref=ref,
                   dataset=dataset, backend=backend)
    summary = json.loads((res.path / "summary.json").read_text())
    outputs = [json.loads(l)["output"] for l in (res.path / "outputs.jsonl").read_text().splitlines()]
    return summary, outputs


def _fake_run(workspace, registry, tiny_model_dir: Path, run_id: str, seed: int) -> None:
    """A succeeded LoRA run on 'tiny' with non-zero (seeded) adapter weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            init_lora_weights=False))
    run_dir = workspace.run_dir("default", run_id)
    peft.save_pretrained(run_dir / "adapter")
    if registry.get_run(run_id) is None:
        registry.put_run(run_id, "default", "sft", "tiny", "tickets@v1", run_dir)
    registry.finish_run(run_id, "succeeded", {})


def test_second_eval_generates_nothing(dataset, workspace, registry) -> None:
    backend = _backend(registry, "tiny")
    first, out1 = _eval(workspace, registry, dataset, backend)
    assert backend.prompts == 6
    assert first["cache"] == {"enabled": True, "hits": 0, "misses": 6, "corrupt": 0}
    second, out2 = _eval(workspace, registry, dataset, backend)
    assert backend.prompts == 6 and backend.calls == 1  # nothing generated the second time
    assert second["cache"] == {"enabled": True, "hits": 6, "misses": 0, "corrupt": 0}
    assert out2 == out1
    # a fresh backend (another process) reads the same cache and never loads the weights
    fresh = _backend(registry, "tiny")
    third, out3 = _eval(workspace, registry, dataset, fresh)
    assert fresh.calls == 0 and fresh._model is None and out3 == out1
    cache_file = workspace.tenant_dir("default") / "cache" / "generations.sqlite"
    assert cache_file.is_file() and oct(cache_file.stat().st_mode & 0o777) == "0o600"


def test_no_cache_switch_generates_every_time(dataset, workspace, registry) -> None:
    backend = _backend(registry, "tiny")
    _eval(workspace, registry, dataset, backend)
    summary, _ = _eval(workspace, registry, dataset, backend, cache=False)
    assert backend.prompts == 12
    assert summary["cache"] == {"enabled": False, "hits": 0, "misses": 6, "corrupt": 0}


def test_changed_settings_and_items_miss(dataset, workspace, registry) -> None:
    backend = _backend(registry, "tiny")
    _, base_out = _eval(workspace, registry, dataset, backend)
    summary, _ = _eval(workspace, registry, dataset, backend, generation={"max_new_tokens": 5})
    assert summary["cache"]["hits"] == 0 and backend.prompts == 12
    summary, _ = _eval(workspace, registry, dataset, backend, generation={"temperature": 0.7})
    assert summary["cache"]["hits"] == 0 and backend.prompts == 18
    # batch size does not change a greedy output: still a hit
    summary, out = _eval(workspace, registry, dataset, backend, generation={"batch_size": 2})
    assert summary["cache"]["hits"] == 6 and backend.prompts == 18 and out == base_out
    # two more items: only those two are generated
    summary, out = _eval(workspace, registry, dataset, backend, limit=8)
    assert summary["cache"] == {"enabled": True, "hits": 6, "misses": 2, "corrupt": 0}
    assert backend.prompts == 20 and out[:6] == base_out
    # an edited prompt is another item
    items = load_items(dataset, "eval", 2)
    edited = [items[0]["prompt"][:-1] + [{"role": "user", "content": "My thermostat is offline."}]]
    cache = GenerationCache.for_tenant(workspace, "default")
    model = resolve_model(registry, "tiny", "default")
    kwargs = dict(model_identity=model.weights, max_new_tokens=4, batch_size=4, cache=cache)
    _, stats = cached_generate(backend, [items[0]["prompt"]], **kwargs)
    assert stats.hits == 1
    _, stats = cached_generate(backend, edited, **kwargs)
    assert stats.hits == 0 and stats.misses == 1
    # another chat template is another setting
    backend.tokenizer.chat_template = backend.tokenizer.chat_template + " "
    _, stats = cached_generate(backend, [items[0]["prompt"]], **kwargs)
    assert stats.hits == 0


def test_adapter_change_misses(dataset, workspace, registry, tiny_model_dir: Path) -> None:
    base_backend = _backend(registry, "tiny")
    _eval(workspace, registry, dataset, base_backend)
    _fake_run(workspace, registry, tiny_model_dir, "run-a", seed=1)
    run_backend = _backend(registry, "run-a")
    summary, out_a = _eval(workspace, registry, dataset, run_backend, ref="run-a")
    assert summary["cache"]["hits"] == 0 and run_backend.prompts == 6
    summary, _ = _eval(workspace, registry, dataset, run_backend, ref="run-a")
    assert summary["cache"]["hits"] == 6 and run_backend.prompts == 6
    # the adapter's weights change on disk (same run id): nothing cached may be reused
    _fake_run(workspace, registry, tiny_model_dir, "run-a", seed=2)
    changed = _backend(registry, "run-a")
    summary, _ = _eval(workspace, registry, dataset, changed, ref="run-a")
    assert summary["cache"]["hits"] == 0 and changed.prompts == 6


def test_corrupt_rows_are_regenerated(dataset, workspace, registry) -> None:
    backend = _backend(registry, "tiny")
    _, out1 = _eval(workspace, registry, dataset, backend)
    path = workspace.tenant_dir("default") / "cache" / "generations.sqlite"
    with sqlite3.connect(path) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM generations ORDER BY key")]
        db.execute("UPDATE generations SET output = 'Refund approved for order 1042.' WHERE key = ?",
                   (keys[0],))
        db.execute("UPDATE generations SET checksum = 'x' WHERE key = ?", (keys[1],))
        db.execute("UPDATE generations SET output = X'FF00' WHERE key = ?", (keys[2],))
    summary, out2 = _eval(workspace, registry, dataset, backend)
    assert summary["cache"] == {"enabled": True, "hits": 3, "misses": 3, "corrupt": 3}
    assert backend.prompts == 9 and out2 == out1
    assert "Refund approved" not in "".join(out2)
    summary, _ = _eval(workspace, registry, dataset, backend)  # repaired
    assert summary["cache"] == {"enabled": True, "hits": 6, "misses": 0, "corrupt": 0}


def test_a_file_that_is_not_a_database_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "generations.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"garbage, not sqlite" * 100)
    cache = GenerationCache(path)
    assert cache.count() == 0
    cache.put_many([("k", "m", "i", "s", "Your router will be replaced.")])
    stats = CacheStats()
    assert cache.get_many(["k", "other"], stats) == {"k": "Your router will be replaced."}
    assert stats.corrupt == 0


def test_backend_without_describe_is_not_cached(tmp_path: Path) -> None:
    class Plain:
        def generate(self, prompts, max_new_tokens, batch_size, progress=None, label="generate"):
            return ["Please restart the hub." for _ in prompts]

    cache = GenerationCache(tmp_path / "g.sqlite")
    prompts = [[{"role": "user", "content": "The hub is blinking red."}]]
    outputs, stats = cached_generate(Plain(), prompts, model_identity={"base": "x"},
                                     max_new_tokens=8, batch_size=1, cache=cache)
    assert outputs == ["Please restart the hub."] and not stats.enabled and cache.count() == 0


def test_cli_no_cache_option(dataset, workspace, registry, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    config = tmp_path / "eval_tiny.yaml"
    config.write_text(f"kind: eval\ntenant: default\neval:\n  models: [tiny]\n"
                      f"  dataset: {dataset['name']}\n  limit: 3\n"
                      f"  generation: {{max_new_tokens: 3, batch_size: 3}}\n")
    runner = CliRunner()
    caches = []
    seen: set[str] = set()
    env = dict(os.environ)  # the command points library caches at its job directory: undo that
    for args in ([], [], ["--no-cache"]):
        try:
            res = runner.invoke(app, ["--workspace", str(workspace.root), "eval", str(config), *args])
        finally:
            os.environ.clear()
            os.environ.update(env)
        assert res.exit_code == 0, res.output
        (new,) = [r for r in registry.list_evals("default") if r["eval_id"] not in seen]
        seen.add(new["eval_id"])
        caches.append(json.loads((Path(new["path"]) / "summary.json").read_text())["cache"])
    assert [c["hits"] for c in caches] == [0, 3, 0]
    assert [c["enabled"] for c in caches] == [True, True, False]
