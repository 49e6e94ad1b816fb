"""GRPO on the tiny model through the real recipe and configs/grpo.yaml: run dir, rewards per name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import StudioError
from engine.models.store import import_model
from engine.train.grpo import train_grpo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(tmp_path: Path, workspace, registry, tiny_model_dir: Path):
    """configs/grpo.yaml in a copy of the repo layout, shrunk to 2 quick steps."""
    project = tmp_path / "proj"
    shutil.copytree(ROOT / "configs", project / "configs")
    (project / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "rewards_example.py", project / "scripts")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_grpo_data.py"), "--out",
                    str(project / "data" / "grpo"), "--prompts", "16"],
                   check=True, capture_output=True, timeout=60)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    cfg = load_config(project / "configs" / "grpo.yaml")
    cfg.train.max_steps = 2
    cfg.train.save_steps = None
    cfg.train.batch_size = 4          # 2 prompts x 2 completions per step
    cfg.train.grpo.num_generations = 2
    cfg.train.grpo.max_completion_len = 8
    return cfg


def test_grpo_writes_a_complete_run_with_named_rewards(cfg, workspace, registry) -> None:
    res = train_grpo(cfg, workspace, registry)
    assert registry.get_run(res.run_id)["status"] == "succeeded"
    assert (res.adapter_dir / "adapter_model.safetensors").is_file()
    assert (res.adapter_dir / "adapter_config.json").is_file()
    rows = [json.loads(l) for l in (res.path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert len(steps) == 2
    for name in ("exact_route", "route_similarity", "house_format"):
        assert all(0.0 <= r[f"rewards/{name}/mean"] <= 1.0 for r in steps)
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["method"] == "grpo"
    assert manifest["metrics"]["steps"] == 2
    assert manifest["metrics"]["preflight"]["probe"] == "none"  # GRPO steps generate: memory only
    assert manifest["metrics"]["preflight"]["optimizer_gb"] > 0
    assert set(manifest["metrics"]["rewards"]) == {"exact_route", "route_similarity", "house_format"}
    assert manifest["metrics"]["rewards"]["route_similarity"]["weight"] == 0.5
    assert manifest["dataset"]["ref"] == "triage_prompts.jsonl"
    served = (res.adapter_dir / "chat_template.jinja").read_text()
    assert served == (Path(registry.get_model("smollm2-135m-instruct")["path"]) / "chat_template.jinja").read_text()
    # seeded: the same config gives the same adapter
    again = train_grpo(cfg, workspace, registry)
    assert again.metrics["adapter_sha256"] == res.metrics["adapter_sha256"]


def test_config_mistakes_fail_before_a_run_starts(cfg, workspace, registry) -> None:
    cfg.train.batch_size = 3
    with pytest.raises(StudioError, match="multiple of grpo.num_generations"):
        train_grpo(cfg, workspace, registry)
    cfg.train.batch_size = 4
    cfg.train.grpo.rewards[0].reference = "{{item.queue_name}}"
    with pytest.raises(StudioError, match=r"\{\{item.queue_name\}\}") as info:
        train_grpo(cfg, workspace, registry)
    assert "answer" in (info.value.hint or "")
    assert registry.list_runs(cfg.tenant) == []
