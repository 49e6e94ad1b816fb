"""`studio reproduce`: a tiny CPU run rebuilt bit for bit from its manifest; drift refused or certified as failed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from engine.errors import StudioError
from engine.hashing import sha256_file
from engine.registry import Registry
from engine.repro import reproduce as rp
from engine.workspace import Workspace
from tests.helpers import ROOT, make_project
from tests.helpers import studio as _studio

STEPS = 6


def studio(*args: str, cwd: Path):
    """The real CLI in a fresh interpreter, importing this checkout's engine."""
    return _studio(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    """Tiny model imported, tickets refined, one short LoRA SFT run (dropout on: RNG state matters)."""
    proj = make_project(tmp_path_factory.mktemp("repro") / "proj", tickets=40)
    assert studio("models", "import", str(tiny_model_dir), "--name", "smollm2-135m-instruct",
                  cwd=proj).returncode == 0
    assert studio("refine", "configs/refine_tickets.yaml", cwd=proj).returncode == 0
    cfg = yaml.safe_load((proj / "configs" / "sft_lora.yaml").read_text())
    cfg["train"].update(max_steps=STEPS, batch_size=4)
    cfg["train"]["lora"]["dropout"] = 0.1
    (proj / "configs" / "repro.yaml").write_text(yaml.safe_dump(cfg))
    res = studio("train", "configs/repro.yaml", cwd=proj)
    assert res.returncode == 0, res.stderr
    run_id = re.search(r"run (run-[0-9a-z-]+) finished", res.stdout).group(1)
    ws = proj / "studio-workspace"
    return {"dir": proj, "ws": ws, "run_id": run_id, "run_dir": ws / "tenants/default/runs" / run_id}


def _certificate(stdout: str, ws: Path) -> tuple[str, dict]:
    new_id = re.search(r"run (run-[0-9a-z-]+) reproduces", stdout).group(1)
    path = ws / "tenants/default/runs" / new_id / rp.CERTIFICATE
    return new_id, json.loads(path.read_text())


def test_manifest_records_everything_a_rebuild_needs(project: dict) -> None:
    m = json.loads((project["run_dir"] / "manifest.json").read_text())
    assert m["config"]["train"]["max_steps"] == STEPS and len(m["config_sha256"]) == 64
    assert m["dataset"]["ref"] == "brightwave-tickets@v1"
    assert {"train.jsonl", "val.jsonl", "eval.jsonl"} <= set(m["dataset"]["files"])
    assert len(m["base_model"]["manifest_sha256"]) == 64
    assert "tokenizer.json" in m["tokenizer"]["files"] and len(m["tokenizer"]["chat_template_sha256"]) == 64
    det = m["determinism"]
    assert det["seed"] == 42 and det["torch_deterministic_algorithms"] is False
    assert det["torch_threads"] >= 1 and "cudnn_benchmark" in det and "PYTHONHASHSEED" in det["env"]
    assert m["lockfile"] == dict(sorted(m["lockfile"].items())) and "torch" in m["lockfile"]
    assert set(m["git"]) == {"commit", "dirty"} and set(m["project_git"]) == {"commit", "dirty"}
    hw = m["hardware"]
    assert hw["cpu_count"] >= 1 and hw["ram_bytes"] > 0
    traj = m["trajectory"]
    assert traj["steps"] == STEPS
    assert traj["sha256"] == sha256_file(project["run_dir"] / "metrics.jsonl")
    weights = m["weights"]["adapter_model.safetensors"]
    assert weights["sha256"] == m["metrics"]["adapter_sha256"]
    assert len(weights["tensors"]) > 4 and all(len(h) == 64 for h in weights["tensors"].values())
    assert m["inputs"]["config_path"].endswith("repro.yaml")


def test_reproduce_is_bit_for_bit_on_cpu(project: dict) -> None:
    res = studio("reproduce", project["run_id"], cwd=project["dir"])
    assert res.returncode == 0, res.stderr
    new_id, cert = _certificate(res.stdout, project["ws"])
    assert new_id != project["run_id"] and cert["original_run"] == project["run_id"]
    assert cert["passed"] is True
    checks = cert["checks"]
    assert set(checks) == {"inputs", "loss", "grad_norm", "learning_rate", "metrics", "weights"}
    assert checks["loss"]["steps"] == STEPS and checks["loss"]["max_abs_diff"] == 0.0
    assert checks["grad_norm"]["max_abs_diff"] == 0.0 and checks["loss"]["tolerance"] == 0.0
    assert checks["weights"]["bit_identical"] is True
    assert checks["weights"]["identical_tensors"] == checks["weights"]["tensors"] > 4
    assert cert["adapter_sha256"]["original"] == cert["adapter_sha256"]["reproduction"]
    assert cert["manifests"]["original_sha256"] == sha256_file(project["run_dir"] / "manifest.json")
    new_dir = project["ws"] / "tenants/default/runs" / new_id
    new_manifest = json.loads((new_dir / "manifest.json").read_text())
    assert cert["manifests"]["reproduction_sha256"] == sha256_file(new_dir / "manifest.json")
    assert new_manifest["reproduces"]["run_id"] == project["run_id"]
    assert new_manifest["config"]["train"]["dataset"] == "brightwave-tickets@v1"  # pinned
    rows = rp.list_reproductions(project["ws"] / "registry.sqlite", "default")
    assert [(r["run_id"], r["original_run"], r["passed"]) for r in rows] == [(new_id, project["run_id"], 1)]
    assert rows[0]["certificate_sha256"] == sha256_file(new_dir / rp.CERTIFICATE)


def test_changed_dataset_is_refused_then_certified_as_failed(project: dict) -> None:
    runs_dir = project["ws"] / "tenants/default/runs"
    train = project["ws"] / "tenants/default/datasets/brightwave-tickets/v1/train.jsonl"
    original = train.read_bytes()
    lines = original.decode().splitlines(keepends=True)
    train.write_text("".join(lines[1:] + lines[:1]))  # same records, another order
    try:
        before = set(runs_dir.iterdir())
        res = studio("reproduce", project["run_id"], cwd=project["dir"])
        assert res.returncode == 2, res.stderr
        assert "cannot be reproduced" in res.stderr and "Traceback" not in res.stderr
        assert "dataset sha256 (brightwave-tickets@v1)" in res.stderr
        assert "dataset file train.jsonl" in res.stderr
        assert set(runs_dir.iterdir()) == before  # refused before anything was written

        res = studio("reproduce", project["run_id"], "--allow-drift", cwd=project["dir"])
        assert res.returncode == 3, res.stderr
        assert "drift (allowed)" in res.stderr
        _, cert = _certificate(res.stdout, project["ws"])
        assert cert["passed"] is False
        assert cert["checks"]["inputs"]["passed"] is False
        assert any("train.jsonl" in d for d in cert["checks"]["inputs"]["differences"])
        assert cert["checks"]["loss"]["passed"] is False and cert["checks"]["loss"]["max_abs_diff"] > 0
        assert cert["checks"]["weights"]["bit_identical"] is False
    finally:
        train.write_bytes(original)


def test_package_and_tokenizer_drift_are_listed(project: dict) -> None:
    ws = Workspace(project["ws"])
    registry = Registry(ws.registry_path)
    original = rp.load_original(registry, project["run_id"], "default")
    cfg, pins = rp.rebuild_config(original)
    assert pins["train.dataset"] == "brightwave-tickets@v1" and pins["train.threads"] >= 1
    assert rp.find_drift(original, cfg, ws, registry).refusals == []
    original.manifest["lockfile"] = {**original.manifest["lockfile"], "torch": "0.0.1"}
    original.manifest["tokenizer"] = {**original.manifest["tokenizer"], "chat_template_sha256": "0" * 64}
    refusals = rp.find_drift(original, cfg, ws, registry).refusals
    assert any(r.startswith("package torch: 0.0.1 → ") for r in refusals)
    assert any(r.startswith("chat template sha256: " + "0" * 64) for r in refusals)


def test_refusals_before_any_work(project: dict, tmp_path: Path) -> None:
    registry = Registry(project["ws"] / "registry.sqlite")
    with pytest.raises(StudioError, match="unknown run"):
        rp.load_original(registry, project["run_id"], "other-tenant")
    with pytest.raises(StudioError, match="unknown run"):
        rp.load_original(registry, "run-nope", "default")
    res = studio("reproduce", project["run_id"], "--tolerance", "loss=abc", cwd=project["dir"])
    assert res.returncode == 2 and "not a number" in res.stderr


def test_tolerances() -> None:
    assert rp.parse_tolerances(None, gpu=False) == {k: 0.0 for k in rp.TOLERANCE_KEYS}
    tol = rp.parse_tolerances(["1e-3", "loss=1e-5,weights=0.5"], gpu=False)
    assert tol == {"loss": 1e-5, "grad_norm": 1e-3, "learning_rate": 1e-3, "metrics": 1e-3,
                   "weights": 0.5}
    assert rp.parse_tolerances(None, gpu=True)["loss"] > 0
    for bad in ("nope=1", "loss=-1", "loss=nan"):
        with pytest.raises(StudioError):
            rp.parse_tolerances([bad], gpu=False)


def _variant_run(project: dict, name: str, file: str, **train: object) -> tuple[str, Path]:
    """A copy of the refined train split as data/<file>, then a 2-step run of repro.yaml without
    its `dataset` and with `train` set: (run id, the file)."""
    src = project["ws"] / "tenants/default/datasets/brightwave-tickets/v1/train.jsonl"
    data = project["dir"] / "data" / file
    data.write_bytes(src.read_bytes())
    cfg = yaml.safe_load((project["dir"] / "configs" / "repro.yaml").read_text())
    del cfg["train"]["dataset"]
    cfg["train"].update(max_steps=2, **train)
    (project["dir"] / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    res = studio("train", f"configs/{name}.yaml", cwd=project["dir"])
    assert res.returncode == 0, res.stderr
    return re.search(r"run (run-[0-9a-z-]+) finished", res.stdout).group(1), data


def test_run_from_a_data_file_is_pinned_to_that_file(project: dict) -> None:
    run_id, data = _variant_run(project, "repro_file", "tickets_file.jsonl",
                                data="../data/tickets_file.jsonl")

    ws = Workspace(project["ws"])
    registry = Registry(ws.registry_path)
    original = rp.load_original(registry, run_id, "default")
    rebuilt, pins = rp.rebuild_config(original)
    assert pins["train.data"] == str(data.resolve()) == rebuilt.train.data
    assert rp.find_drift(original, rebuilt, ws, registry).refusals == []
    data.write_text(data.read_text() + data.read_text().splitlines()[0] + "\n")
    (refusal,) = rp.find_drift(original, rebuilt, ws, registry).refusals
    assert refusal.startswith("dataset sha256 (tickets_file.jsonl): " + original.manifest["dataset"]["sha256"])
    data.unlink()
    assert rp.find_drift(original, rebuilt, ws, registry).refusals == ["dataset file tickets_file.jsonl: missing"]


def test_a_mixture_run_reproduces_and_each_source_is_pinned_and_checked(project: dict) -> None:
    run_id, data = _variant_run(project, "repro_mix", "mix_file.jsonl",
                                datasets=[{"dataset": "brightwave-tickets", "weight": 2.0},
                                          {"data": "../data/mix_file.jsonl", "weight": 1.0}])

    ws = Workspace(project["ws"])
    registry = Registry(ws.registry_path)
    original = rp.load_original(registry, run_id, "default")
    rebuilt, pins = rp.rebuild_config(original)
    assert pins["train.datasets[0].dataset"] == "brightwave-tickets@v1"  # "latest" pinned
    assert rp.find_drift(original, rebuilt, ws, registry).refusals == []
    # the real CLI, from another directory: the file source must still be found
    res = studio("--workspace", str(project["ws"]), "reproduce", run_id, cwd=project["dir"] / "data")
    assert res.returncode == 0, res.stdout + res.stderr
    _, cert = _certificate(res.stdout, project["ws"])
    assert cert["passed"] and cert["checks"]["weights"]["bit_identical"]
    data.write_text(data.read_text() + data.read_text().splitlines()[0] + "\n")
    (refusal,) = rp.find_drift(original, rebuilt, ws, registry).refusals
    assert refusal.startswith("dataset sha256 (mix_file.jsonl): ")
