"""Lineage: a run trained on top of another (DPO after SFT) starts from its weights and records it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import StudioError
from engine.models.resolve import resolve_model
from engine.models.store import import_model
from engine.registry import Registry
from engine.models.export import export_run
from engine.train.launch import train_run
from tests.helpers import ROOT, make_project, refined_dataset


@pytest.fixture
def project(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> Path:
    project = make_project(tmp_path / "proj", tickets=40)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_preference_data.py"), "--out",
                    str(project / "data" / "preference")], check=True, capture_output=True)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    refined_dataset(project, workspace, registry)
    return project


def test_dpo_on_top_of_sft(project: Path, workspace, registry) -> None:
    sft = load_config(project / "configs" / "sft_lora.yaml")
    sft.train.max_steps, sft.train.learning_rate = 2, 5e-2
    parent = train_run(sft, workspace, registry)

    dpo = load_config(project / "configs" / "dpo.yaml")
    dpo.train.max_steps, dpo.train.max_seq_len, dpo.train.parent_run = 2, 128, parent.run_id
    child = train_run(dpo, workspace, registry)

    row = registry.get_run(child.run_id)
    assert row["status"] == "succeeded" and row["parent_run"] == parent.run_id
    merged = parent.path / "export" / "merged"
    merged_manifest = json.loads((merged / "manifest.json").read_text())
    manifest = json.loads((child.path / "manifest.json").read_text())
    assert manifest["base_model"]["parent_run"] == parent.run_id
    assert manifest["base_model"]["manifest_sha256"] == merged_manifest["files_sha256"]
    assert manifest["base_model"]["name"] == "smollm2-135m-instruct"

    # evaluation and export of the child start from the parent's weights, not the bare base
    ref = resolve_model(registry, child.run_id, "default")
    assert ref.model_dir == merged and ref.adapter_dir == child.adapter_dir
    exported = export_run(workspace, registry, child.run_id, "default", merge=True)
    assert json.loads((exported / "manifest.json").read_text())["lineage"]["parent_run"] == parent.run_id


def test_parent_run_errors(project: Path, workspace, registry) -> None:
    cfg = load_config(project / "configs" / "sft_lora.yaml")
    cfg.train.max_steps = 1
    cfg.train.parent_run = "run-nope"
    with pytest.raises(StudioError, match="unknown parent run"):
        train_run(cfg, workspace, registry)
    assert registry.list_runs("default") == []


def test_old_registry_gains_the_parent_column(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, method TEXT NOT NULL, "
                   "base_model TEXT NOT NULL, dataset TEXT NOT NULL, status TEXT NOT NULL, path TEXT NOT NULL, "
                   "created_at TEXT NOT NULL, finished_at TEXT, metrics TEXT)")
        db.execute("INSERT INTO runs VALUES ('r1','default','sft','m','d@v1','succeeded','/x','t',NULL,NULL)")
    reg = Registry(path)
    assert reg.get_run("r1")["parent_run"] is None
    reg.put_run("r2", "default", "dpo", "m", "d@v1", tmp_path, parent_run="r1")
    assert reg.get_run("r2")["parent_run"] == "r1"
