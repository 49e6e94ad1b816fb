"""LoRA SFT on the tiny model through the real recipe: run directory, manifest, masks, resume-safe status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import StudioError
from engine.models.store import import_model
from engine.train.sft import train_sft
from tests.helpers import make_project, refined_dataset


@pytest.fixture
def setup(tmp_path: Path, workspace, registry, tiny_model_dir: Path):
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    dataset = refined_dataset(project, workspace, registry)
    cfg = load_config(project / "configs" / "sft_lora.yaml")
    cfg.train.max_steps = 3
    cfg.train.save_steps = 2
    return cfg, dataset


def test_sft_writes_a_complete_run(setup, workspace, registry) -> None:
    cfg, dataset = setup
    res = train_sft(cfg, workspace, registry)
    run = registry.get_run(res.run_id)
    assert run["status"] == "succeeded"
    assert (res.adapter_dir / "adapter_model.safetensors").is_file()
    assert (res.adapter_dir / "adapter_config.json").is_file()
    assert (res.path / "config.yaml").is_file()
    assert (res.path / "loss.svg").is_file()
    assert any((res.path / "checkpoints").glob("checkpoint-*"))
    rows = [json.loads(l) for l in (res.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(l > 0 for l in losses)
    assert all(r["tokens_per_s"] > 0 for r in rows[1:] if "loss" in r)  # per step, after the first
    assert all("grad_norm" in r and "learning_rate" in r for r in rows if "loss" in r)
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["seed"] == cfg.seed
    assert manifest["dataset"]["sha256"] == dataset["sha256"]
    assert set(manifest["dataset"]["files"]) >= {"train.jsonl", "val.jsonl", "eval.jsonl"}
    assert manifest["base_model"]["manifest_sha256"] == registry.get_model("smollm2-135m-instruct")["manifest_sha256"]
    assert manifest["packages"]["trl"] and manifest["packages"]["torch"]
    assert "transformers" in manifest["lockfile"]
    assert {"commit", "dirty"} <= manifest["git"].keys()
    assert manifest["hardware"]["cpu_count"] >= 1
    assert manifest["metrics"]["loss_mode"] == "assistant_only"
    assert "adapter_model.safetensors" in manifest["outputs"]["files"]
    # the adapter ships the serving template, not the training one
    served = (res.adapter_dir / "chat_template.jinja").read_text()
    assert served == (Path(registry.get_model("smollm2-135m-instruct")["path"]) / "chat_template.jinja").read_text()


def test_same_seed_gives_bit_identical_adapter(setup, workspace, registry) -> None:
    cfg, dataset = setup
    a = train_sft(cfg, workspace, registry)
    b = train_sft(cfg, workspace, registry)
    assert a.metrics["adapter_sha256"] == b.metrics["adapter_sha256"]
    assert a.metrics["final_loss"] == b.metrics["final_loss"]


def test_interrupted_run_is_marked(setup, workspace, registry, monkeypatch) -> None:
    cfg, dataset = setup
    from engine.train import common

    def boom(self, args, state, control, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(common.ProgressCallback, "on_step_end", boom)
    with pytest.raises(KeyboardInterrupt):
        train_sft(cfg, workspace, registry)
    (run,) = registry.list_runs(cfg.tenant)
    assert run["status"] == "interrupted"
    assert not (Path(run["path"]) / "manifest.json").exists()


def test_unknown_base_model(setup, workspace, registry) -> None:
    cfg, dataset = setup
    cfg.train.base_model = "nope"
    with pytest.raises(StudioError, match="unknown base model"):
        train_sft(cfg, workspace, registry)
    assert registry.list_runs(cfg.tenant) == []


def test_dry_run_preview_reports_loss_share(setup, registry) -> None:
    from engine.train.preview import preview

    cfg, dataset = setup
    report = preview(cfg, registry)
    assert report["loss_mode"] == "assistant_only"
    assert 0.02 < report["loss_token_share"] < 0.6
    assert report["train_examples"] > 0


def test_dry_run_and_train_refuse_a_chat_family_the_model_is_not(setup, workspace, registry) -> None:
    """The tiny model serves a ChatML template: pinning Llama 3.1 is refused, naming the key, by the preview
    (which `studio train --dry-run` turns into exit 2) and by training, before any run exists."""
    from engine.train.preview import preview

    cfg, _ = setup
    assert preview(cfg, registry)["gate"] == "passed"
    cfg.train.chat_template = "llama3_1"
    report = preview(cfg, registry)
    assert report["loss_mode"] == "refused"
    assert report["gate"].startswith("FAILED") and "llama3_1" in report["gate"]
    assert "train.chat_template" in report["gate"]
    with pytest.raises(StudioError, match="llama3_1") as err:
        train_sft(cfg, workspace, registry)
    assert err.value.where == "train.chat_template"
    assert registry.list_runs(cfg.tenant) == []
    cfg.train.chat_template = "chatml"  # the model's own family, pinned: trains as before
    assert preview(cfg, registry)["gate"] == "passed"
