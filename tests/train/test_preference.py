"""Preference recipes (dpo, kto, orpo, cpo, simpo) and reward models on the tiny model, from configs/."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import StudioConfig, load_config
from engine.errors import StudioError
from engine.models.store import import_model
from tests.helpers import ROOT

STEPS = 2


@pytest.fixture
def project(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> Path:
    """configs/ next to freshly generated data/preference (the repo's layout), tiny model imported."""
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "configs", proj / "configs")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_preference_data.py"), "--out",
                    str(proj / "data" / "preference"), "--pairs", "24", "--feedback", "24"],
                   check=True, capture_output=True, timeout=120)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    return proj


def example(project: Path, name: str) -> StudioConfig:
    """An example config made quick: a few steps, small batches, short sequences."""
    cfg = load_config(project / "configs" / name)
    assert cfg.train is not None
    cfg.train.max_steps = STEPS
    cfg.train.batch_size = 2
    cfg.train.max_seq_len = 128  # the tiny tokenizer needs 80-118 tokens per pair
    cfg.train.lora.r = 4
    cfg.train.learning_rate = 1e-3
    return cfg


def train(cfg: StudioConfig, workspace, registry):
    from engine.train.launch import train_run

    return train_run(cfg, workspace, registry)


def fresh_lora(model_dir: Path, cfg: StudioConfig, seq_cls: bool) -> dict:
    """The adapter tensors a run starts from (same seed, same LoRA config), before any step."""
    from peft import get_peft_model, get_peft_model_state_dict
    from transformers import set_seed

    from engine.train.common import load_model_for_training

    kw = {"auto_class": "AutoModelForSequenceClassification", "num_labels": 1} if seq_cls else {}
    model, peft_config = load_model_for_training(cfg.train, model_dir, False, **kw)
    set_seed(cfg.seed)
    return get_peft_model_state_dict(get_peft_model(model, peft_config))


def check_run(res, cfg: StudioConfig, registry, method: str) -> None:
    import torch
    from safetensors.torch import load_file

    assert registry.get_run(res.run_id)["status"] == "succeeded"
    weights = res.adapter_dir / "adapter_model.safetensors"
    assert weights.is_file() and (res.adapter_dir / "adapter_config.json").is_file()
    trained = load_file(weights)
    start = fresh_lora(Path(registry.get_model("smollm2-135m-instruct")["path"]), cfg, method == "reward")
    lora_keys = [k for k in start if "lora_" in k]
    assert lora_keys and set(lora_keys) <= set(trained)
    changed = [k for k in lora_keys if not torch.equal(start[k], trained[k])]
    assert any("lora_B" in k for k in changed), "training did not move the adapter"
    assert all(torch.isfinite(t).all() for t in trained.values())
    rows = [json.loads(line) for line in (res.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["method"] == method
    assert "adapter_model.safetensors" in manifest["outputs"]["files"]
    assert manifest["metrics"]["steps"] == STEPS


@pytest.mark.parametrize("method, config", [
    ("dpo", "dpo.yaml"), ("kto", "kto.yaml"), ("orpo", "orpo.yaml"), ("cpo", "simpo.yaml"),
    ("simpo", "simpo.yaml"),
])
def test_preference_method_trains_the_adapter(project, workspace, registry, method, config) -> None:
    cfg = example(project, config)
    cfg.train.method = method
    if method == "cpo":
        cfg.train.preference.beta = 0.1
    res = train(cfg, workspace, registry)
    check_run(res, cfg, registry, method)
    metrics = res.metrics
    # preflight measured the method's own loss on a real batch before training
    assert metrics["preflight"]["probe"] == "step" and metrics["preflight"]["seconds_per_step"] > 0
    assert metrics["preflight"]["activations_gb"] > 0 and metrics["preflight"]["steps"] == metrics["steps"]
    assert metrics["loss_type"] == {"dpo": "sigmoid", "kto": "kto", "orpo": "orpo", "cpo": "sigmoid",
                                    "simpo": "simpo"}[method]
    if method == "kto":  # binary feedback: both thumbs are present and counted
        assert metrics["desirable_examples"] > 0 and metrics["undesirable_examples"] > 0
        assert metrics["undesirable_weight"] == cfg.train.preference.undesirable_weight
    # the adapter ships the serving template
    base_dir = Path(registry.get_model("smollm2-135m-instruct")["path"])
    served = (res.adapter_dir / "chat_template.jinja").read_text()
    assert served == (base_dir / "chat_template.jinja").read_text()


def test_reward_model_trains_head_and_adapter(project, workspace, registry) -> None:
    cfg = example(project, "reward.yaml")
    res = train(cfg, workspace, registry)
    check_run(res, cfg, registry, "reward")
    from safetensors.torch import load_file

    assert any("score" in k for k in load_file(res.adapter_dir / "adapter_model.safetensors"))
    assert res.metrics["dropped_too_long"] == 0


@pytest.mark.parametrize("config, bad, reason", [
    ("dpo.yaml", {"input": {"messages": [{"role": "user", "content": "secret ticket text"}]},
                  "preferred_output": [{"role": "assistant", "content": "Queue: RETURNS | Priority: P2"}]},
     "non_preferred_output"),
    ("kto.yaml", {"prompt": [{"role": "user", "content": "secret ticket text"}],
                  "completion": [{"role": "assistant", "content": "Queue: RETURNS | Priority: P2"}]},
     "label"),
    ("reward.yaml", {"prompt": [{"role": "user", "content": "secret ticket text"}],
                     "chosen": [{"role": "assistant", "content": "Queue: RETURNS | Priority: P2"}]},
     "needs chosen and rejected"),
])
def test_bad_preference_line_refuses_to_start(project, workspace, registry, config, bad, reason) -> None:
    cfg = example(project, config)
    data = cfg.resolve_path(cfg.train.data)
    n = len(data.read_text().splitlines())
    with data.open("a") as f:
        f.write(json.dumps(bad) + "\n")
    with pytest.raises(StudioError) as info:
        train(cfg, workspace, registry)
    message = str(info.value)
    assert f"{data.name}:{n + 1}:" in message and reason in message
    assert "secret" not in message  # never customer text
    assert registry.list_runs(cfg.tenant) == []


def test_config_mistakes_are_reported_before_a_run(project, workspace, registry) -> None:
    cfg = example(project, "orpo.yaml")
    cfg.train.preference.loss_type = "ipo"
    with pytest.raises(StudioError, match="not available for method 'orpo'") as info:
        train(cfg, workspace, registry)
    assert info.value.where == "train.preference.loss_type"
    cfg = example(project, "kto.yaml")
    cfg.train.batch_size = 1
    with pytest.raises(StudioError, match="at least 2"):
        train(cfg, workspace, registry)
    cfg = example(project, "simpo.yaml")
    cfg.train.max_seq_len = 16  # no prompt leaves room for a reply
    with pytest.raises(StudioError, match="every prompt") as info:
        train(cfg, workspace, registry)
    assert info.value.where == "train.max_seq_len"
    cfg = example(project, "reward.yaml")
    cfg.train.max_seq_len = 16  # no pair fits
    with pytest.raises(StudioError, match="every pair") as info:
        train(cfg, workspace, registry)
    assert info.value.where == "train.max_seq_len"
    assert registry.list_runs(cfg.tenant) == []


def test_long_prompts_are_shortened_to_max_prompt_len(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from engine.train.preference import _fit_prompts, _prompt_tokens

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    system = {"role": "system", "content": "You are the Brightwave Home triage assistant."}
    turns = [{"role": "user", "content": "my thermostat is offline " * 8},
             {"role": "assistant", "content": "Queue: TECH-SUPPORT | Priority: P2"},
             {"role": "user", "content": "still offline after the reset, order 123456 " * 6}]
    row = {"prompt": [system, *turns], "chosen": [], "rejected": []}
    short = {"prompt": [system, turns[0]], "chosen": [], "rejected": []}
    limit = _prompt_tokens(tok, [system, turns[0]]) + 4
    (fitted, kept), shortened = _fit_prompts([row, short], tok, limit)
    assert shortened == 1 and kept is short
    assert _prompt_tokens(tok, fitted["prompt"]) <= limit
    assert fitted["prompt"][0] == system and fitted["prompt"][-1]["role"] == "user"
    assert turns[2]["content"].startswith(fitted["prompt"][-1]["content"].strip())
