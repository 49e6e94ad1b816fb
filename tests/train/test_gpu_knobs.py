"""GPU knobs of the `train` section (docs/training.md "GPU knobs"): what each sets in TRL /
transformers, the refusals before any weights load, and tiny real runs (checkpointing is exact,
evaluation + early stopping + best model, TensorBoard event files, a weighted data mixture)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

from engine.config import load_config, parse_config
from engine.config.train import OPTIMIZERS, EarlyStoppingSpec
from engine.errors import ConfigError, StudioError
from engine.models.store import import_model
from engine.train.common import check_device_knobs, common_args
from engine.train.sft import train_sft
from tests.helpers import make_project, refined_dataset

BASE = "kind: train\ntrain:\n  base_model: m\n  dataset: d\n"


def _train(extra: str):
    return parse_config(BASE + extra, "knobs.yaml").train


# ---------------------------------------------------------------------------------- config load
def test_optimizer_names_are_transformers_own() -> None:
    from transformers.training_args import OptimizerNames

    assert OPTIMIZERS == tuple(o.value for o in OptimizerNames)


@pytest.mark.parametrize("extra, field, words", [
    ("  optimizer: adamw_fancy\n", "train.optimizer", ["adamw_fancy", "adamw_torch_fused", "paged_adamw_8bit"]),
    ("  attn_implementation: flash\n", "train.attn_implementation", ["sdpa", "flash_attention_2"]),
    ("  load_best_model_at_end: true\n", "train.load_best_model_at_end", ["eval_steps"]),
    ("  eval_steps: 10\n  save_steps: 15\n  load_best_model_at_end: true\n",
     "train.load_best_model_at_end", ["multiple", "15", "10"]),
    ("  eval_steps: 10\n  early_stopping: {patience: 2}\n", "train.early_stopping",
     ["load_best_model_at_end"]),
    ("  early_stopping: {patience: 2}\n", "train.early_stopping", ["eval_steps"]),
    ("  max_grad_norm: -1\n", "train.max_grad_norm", []),
    ("  datasets: [{dataset: a, weight: 1}, {dataset: b, weight: 2}]\n", "train", ["datasets"]),
    ("  dataset: null\n  datasets: [{dataset: a, weight: 1}, {dataset: b, data: c, weight: 1}]\n",
     "train.datasets[1]", ["exactly one"]),
    ("  dataset: null\n  datasets: [{dataset: a, weight: 0}, {dataset: b, weight: 1}]\n",
     "train.datasets[0].weight", []),
    ("  method: grpo\n  eval_steps: 5\n", "train.eval_steps", ["grpo"]),
])
def test_bad_knobs_are_refused_at_config_load(extra: str, field: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        _train(extra)
    text = str(exc.value)
    assert f"knobs.yaml: {field}:" in text and "(line " in text, text
    assert all(w in text for w in words), text


def test_knobs_reach_the_training_arguments(tmp_path: Path) -> None:
    from trl import SFTConfig

    cfg = parse_config(BASE + "  gradient_checkpointing: true\n  optimizer: adafactor\n"
                       "  max_grad_norm: 0.5\n  eval_steps: 4\n  load_best_model_at_end: true\n"
                       "  early_stopping: {patience: 2, threshold: 0.01}\n", "k.yaml")
    args = SFTConfig(**common_args(cfg, tmp_path, use_cuda=False))
    assert args.activation_checkpointing and args.gradient_checkpointing  # the old name mirrors
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert args.optim == "adafactor" and args.max_grad_norm == 0.5
    assert args.eval_strategy == "steps" and args.eval_steps == 4
    assert args.save_strategy == "steps" and args.save_steps == 4  # aligned with evaluation
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.greater_is_better is False and args.report_to == []
    plain = SFTConfig(**common_args(parse_config(BASE, "k.yaml"), tmp_path, use_cuda=False))
    assert not plain.activation_checkpointing and plain.eval_strategy == "no"
    assert plain.optim == "adamw_torch_fused" and plain.max_grad_norm == 1.0  # transformers' defaults
    assert plain.save_strategy == "epoch" and not plain.load_best_model_at_end


# ------------------------------------------------------------------- refused before loading weights
def _missing(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = builtins.__import__

    def fake(mod: str, *a, **kw):
        if mod == name or mod.startswith(name + "."):
            raise ImportError(f"No module named {name!r}")
        return real(mod, *a, **kw)

    monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_flash_attention_is_refused_without_cuda_or_package(monkeypatch) -> None:
    spec = _train("  attn_implementation: flash_attention_2\n")
    with pytest.raises(StudioError) as exc:
        check_device_knobs(spec, use_cuda=False)
    assert exc.value.where == "train.attn_implementation" and "CUDA" in exc.value.what
    _missing(monkeypatch, "flash_attn")
    with pytest.raises(StudioError) as exc:
        check_device_knobs(spec, use_cuda=True)
    assert exc.value.where == "train.attn_implementation" and "flash_attn" in exc.value.what
    check_device_knobs(_train("  attn_implementation: sdpa\n"), use_cuda=False)  # fine anywhere


def test_bitsandbytes_optimizers_are_refused_without_cuda_or_package(monkeypatch) -> None:
    spec = _train("  optimizer: paged_adamw_8bit\n")
    with pytest.raises(StudioError) as exc:
        check_device_knobs(spec, use_cuda=False)
    assert exc.value.where == "train.optimizer" and "CUDA" in exc.value.what
    _missing(monkeypatch, "bitsandbytes")
    with pytest.raises(StudioError) as exc:
        check_device_knobs(spec, use_cuda=True)
    assert exc.value.where == "train.optimizer" and "bitsandbytes" in exc.value.what
    check_device_knobs(_train("  optimizer: adamw_torch\n"), use_cuda=False)


# ------------------------------------------------------------------------------------- tiny runs
@pytest.fixture
def setup(tmp_path: Path, workspace, registry, tiny_model_dir: Path):
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    dataset = refined_dataset(project, workspace, registry)
    cfg = load_config(project / "configs" / "sft_lora.yaml")
    cfg.train.max_steps = 3
    cfg.train.save_steps = None
    cfg.train.batch_size = 4
    return project, cfg, dataset


def _losses(run_path: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_path / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_gradient_checkpointing_gives_the_same_losses(setup, workspace, registry, adapter) -> None:
    _, cfg, _ = setup
    cfg.train.adapter = adapter
    cfg.train.learning_rate = 1e-4
    plain = _losses(train_sft(cfg, workspace, registry).path)
    cfg.train.gradient_checkpointing = True
    res = train_sft(cfg, workspace, registry)
    checkpointed = _losses(res.path)
    assert len(plain) == len(checkpointed) == 3
    assert max(abs(a - b) for a, b in zip(plain, checkpointed)) <= 1e-5, (plain, checkpointed)
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["config"]["train"]["gradient_checkpointing"] is True


def test_eval_best_model_early_stopping_and_tensorboard(setup, workspace, registry) -> None:
    from transformers.integrations import is_tensorboard_available

    _, cfg, _ = setup
    cfg.train.max_steps = 6
    cfg.train.eval_steps = 1
    cfg.train.load_best_model_at_end = True
    cfg.train.early_stopping = EarlyStoppingSpec(patience=1, threshold=10.0)  # no drop is that
    # large: training stops after the second evaluation
    tensorboard = is_tensorboard_available()
    cfg.train.logging = "tensorboard" if tensorboard else "none"
    res = train_sft(cfg, workspace, registry)
    rows = [json.loads(line) for line in (res.path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_loss" in r]
    # evaluated at steps 1 and 2, then early stopping ended the run (at step 2 of 6); the last
    # evaluation is the recipe's own val_loss of the best model
    assert [r["step"] for r in evals] == [1, 2, 2] and max(r["step"] for r in rows) == 2
    assert res.metrics["steps"] == 2 and res.metrics["val_loss"] == pytest.approx(
        min(r["eval_loss"] for r in evals[:2]), abs=1e-5)  # the best checkpoint was loaded
    if tensorboard:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = sorted((res.path / "tensorboard").glob("events.out.tfevents.*"))
        assert events and not (res.path / "checkpoints" / "runs").exists()  # not transformers' default
        scalars = EventAccumulator(str(events[0])).Reload().Tags()["scalars"]
        assert {"train/loss", "train/learning_rate", "eval/loss"} <= set(scalars), scalars


def test_tensorboard_missing_is_refused(monkeypatch) -> None:
    import engine.train.common as common

    monkeypatch.setattr(common, "is_tensorboard_available", lambda: False)
    with pytest.raises(StudioError) as exc:
        check_device_knobs(_train("  logging: tensorboard\n"), use_cuda=False)
    assert exc.value.where == "train.logging" and "pip install tensorboard" in (exc.value.hint or "")


def test_eval_steps_without_a_val_split_is_refused(setup, workspace, registry) -> None:
    project, cfg, _ = setup
    file = project / "chats.jsonl"
    file.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(8)))
    cfg.train.dataset, cfg.train.data, cfg.train.eval_steps = None, str(file), 2
    with pytest.raises(StudioError) as exc:
        train_sft(cfg, workspace, registry)
    assert exc.value.where == "train.eval_steps"
    assert registry.list_runs() == [] if hasattr(registry, "list_runs") else True
