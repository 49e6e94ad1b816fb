"""`studio run` (engine/flow.py) trains through the same launcher as `studio train`: the method it
records is the method it trained, and a method the pipeline cannot feed is refused before any work.

The DPO pipeline runs for real on a tiny model whose output head is not tied to its embeddings, so
its greedy answers are not blank and the refine's preference stage writes pairs from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from engine.config import load_config, parse_config
from engine.errors import ConfigError
from engine.registry import Registry
from engine.workspace import Workspace
from tests.helpers import make_project, studio

MODEL = "tiny-untied"


@pytest.fixture(scope="module")
def untied_model(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny chat model with its own (random) output head: it answers in non-blank tokens."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("untied") / "model"
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig.from_pretrained(tiny_model_dir)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("flow") / "proj", tickets=16)


def pipeline(project: Path, model_dir: Path, name: str, train: dict, llm: dict | None = None) -> Path:
    """configs/quickstart.yaml made quick: the given model and train section, a small eval."""
    cfg = yaml.safe_load((project / "configs" / "quickstart.yaml").read_text())
    cfg["model"] = {"name": MODEL, "source": str(model_dir)}
    if llm is not None:
        cfg["refine"]["llm"] = llm
    cfg["train"] = {"adapter": "lora", "lora": {"r": 4, "alpha": 8}, "max_steps": 2,
                    "batch_size": 2, "max_seq_len": 192, "learning_rate": 1.0e-3, **train}
    cfg["eval"].update(limit=4, generation={"max_new_tokens": 4, "batch_size": 4})
    cfg["gate"] = {"require": "none"}
    path = project / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


PREFERENCES = {"model": MODEL, "batch_size": 16, "max_new_tokens": 8,
               "preferences": {"enabled": True}}


def test_a_dpo_pipeline_trains_dpo_on_the_refines_preference_pairs(
        tmp_path: Path, project: Path, untied_model: Path) -> None:
    from engine.flow import run_pipeline

    ws = Workspace(tmp_path / "ws").ensure()
    registry = Registry(ws.registry_path)
    cfg = load_config(pipeline(project, untied_model, "dpo_pipeline", {"method": "dpo"}, PREFERENCES))
    with ws.job_tmp(cfg.tenant):
        summary = run_pipeline(cfg, ws, registry)

    name, version = summary["dataset"].split("@v")
    dataset = registry.get_dataset(cfg.tenant, name, int(version))
    pairs = (Path(dataset["path"]) / "preferences.jsonl").read_text().splitlines()
    assert pairs, "the preference stage wrote no pairs"
    row = registry.get_run(summary["run_id"])
    assert row["method"] == "dpo" and row["status"] == "succeeded"
    manifest = json.loads((Path(row["path"]) / "manifest.json").read_text())
    assert manifest["method"] == "dpo"
    assert manifest["metrics"]["train_examples"] == len(pairs)  # one row per pair
    assert "preferences.jsonl" in manifest["dataset"]["files"]
    # what only the DPO trainer logs: implicit rewards against the reference model
    logged = [json.loads(line) for line in (Path(row["path"]) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "loss" in r]
    assert len(steps) == 2
    assert all("rewards/chosen" in r and "rewards/margins" in r for r in steps)


@pytest.mark.parametrize("train, llm, field, words", [
    ({"method": "reward"}, None, "train.method", ["method 'reward'", "sft", "dpo", "studio train"]),
    ({"method": "grpo", "grpo": {"rewards": [{"type": "string_check", "operation": "eq",
                                             "reference": "{{item.answer}}"}]}},
     None, "train.method", ["method 'grpo'", "studio train"]),
    ({"method": "dpo"}, None, "train.method", ["refine.llm.preferences.enabled"]),
    ({"method": "kto"}, {"model": MODEL}, "train.method", ["refine.llm.preferences.enabled"]),
    ({"method": "sft", "data": "pairs.jsonl"}, None, "train.data", ["remove train.data"]),
])
def test_what_the_pipeline_cannot_feed_is_refused_at_load(
        project: Path, tiny_model_dir: Path, train: dict, llm: dict | None, field: str,
        words: list[str]) -> None:
    path = pipeline(project, tiny_model_dir, f"bad_{train['method']}", train, llm)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}: {field}: " in text and "(line " in text
    for word in words:
        assert word in text


def test_every_method_the_pipeline_can_feed_validates(project: Path, tiny_model_dir: Path) -> None:
    text = pipeline(project, tiny_model_dir, "ok", {"method": "sft"}).read_text()
    cfg = parse_config(text)
    assert cfg.train.method == "sft"
    with_prefs = yaml.safe_load(text)
    with_prefs["refine"]["llm"] = PREFERENCES
    for method in ("dpo", "kto", "orpo", "cpo", "simpo"):
        with_prefs["train"]["method"] = method
        assert parse_config(yaml.safe_dump(with_prefs)).train.method == method


def test_studio_run_refuses_an_unfed_method_before_any_work(tmp_path: Path, project: Path,
                                                            tiny_model_dir: Path) -> None:
    path = pipeline(project, tiny_model_dir, "bad_cli", {"method": "reward"})
    home, wsdir = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    res = studio("--workspace", str(wsdir), "run", str(path), cwd=project, home=home)
    assert res.returncode == 2, res.stderr
    assert "train.method" in res.stderr and "Traceback" not in res.stderr
    if (wsdir / "registry.sqlite").exists():  # nothing imported, refined or trained
        registry = Registry(wsdir / "registry.sqlite")
        assert registry.list_models() == []
        assert registry.list_datasets("default") == [] and registry.list_runs("default") == []
    assert not list(wsdir.glob("tenants/*/datasets/*")) and not list(wsdir.glob("tenants/*/runs/*"))
