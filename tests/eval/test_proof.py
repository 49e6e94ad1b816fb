"""Proof-of-gain record: stable across repeated evals, changes with the items, the model, the judge
and the environment, detects tampering, and holds hashes — never customer text."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from engine.config import EvalSpec
from engine.errors import StudioError
from engine.eval.proof import (PROOF_FILE, build_proof, differing_sections, environment,
                               read_proof, verify_proof)
from engine.eval.items import load_items
from engine.eval.run import run_eval
from engine.models.resolve import resolve_model
from engine.models.store import import_model
from tests.helpers import make_project, refined_dataset

SPEC = {"limit": 5, "generation": {"max_new_tokens": 3, "batch_size": 5}}


@pytest.fixture
def dataset(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> dict:
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "tiny")
    return refined_dataset(project, workspace, registry)


def _proof(workspace, registry, dataset, ref: str = "tiny", **spec) -> dict:
    res = run_eval(EvalSpec(**{**SPEC, **spec}), workspace, registry, tenant="default",
                   model_ref=ref, dataset=dataset)
    proof = read_proof(res.path)
    assert json.loads((res.path / "summary.json").read_text())["proof_sha256"] == proof["proof_sha256"]
    return proof


def _lora_run(workspace, registry, tiny_model_dir: Path, run_id: str) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            init_lora_weights=False))
    run_dir = workspace.run_dir("default", run_id)
    peft.save_pretrained(run_dir / "adapter")
    registry.put_run(run_id, "default", "sft", "tiny", "tickets@v1", run_dir)
    registry.finish_run(run_id, "succeeded", {})


def test_repeated_eval_gives_the_same_record(dataset, workspace, registry) -> None:
    first = _proof(workspace, registry, dataset)
    again = _proof(workspace, registry, dataset, cache=False)  # cache switch: not part of the suite
    assert first["eval_id"] != again["eval_id"]
    assert first["proof_sha256"] == again["proof_sha256"] and first["hashes"] == again["hashes"]
    assert verify_proof(first) == []
    # what a third party needs to re-run it is in the record
    assert first["items"]["count"] == 5 and len(first["items"]["items"]) == 5
    assert first["model"]["weights"]["base"] == registry.get_model("tiny")["manifest_sha256"]
    assert first["generation"]["backend"]["backend"] == "transformers"
    assert first["generation"]["backend"]["chat_template_sha256"]
    assert first["generation"]["settings"]["max_new_tokens"] == 3
    assert first["seeds"] == {"generation": 0}
    assert first["dataset"]["sha256"] == dataset["sha256"]
    assert first["environment"]["packages"]["torch"] and first["environment"]["lockfile"]
    assert first["judge"] is None


def test_record_changes_with_items_and_model(dataset, workspace, registry, tiny_model_dir) -> None:
    base = _proof(workspace, registry, dataset)
    more = _proof(workspace, registry, dataset, limit=6)
    assert differing_sections(base, more) == ["suite", "items"]
    _lora_run(workspace, registry, tiny_model_dir, "run-tuned")
    tuned = _proof(workspace, registry, dataset, ref="run-tuned")
    assert differing_sections(base, tuned) == ["model"]  # a fair base/tuned pair
    assert tuned["model"]["weights"]["adapter"] and base["proof_sha256"] != tuned["proof_sha256"]
    # one edited item (same id, other content) changes the item hashes
    items = load_items(dataset, "eval", 5)
    edited = copy.deepcopy(items)
    edited[2]["prompt"][-1]["content"] += " My order number is 88213."
    edited[2]["item_hash"] = "0" * 64
    ref = resolve_model(registry, "tiny", "default")
    env = environment()
    spec = EvalSpec(**SPEC)
    a = build_proof(spec, items, ref, dataset, env=env)
    b = build_proof(spec, edited, ref, dataset, env=env)
    assert differing_sections(a, b) == ["items"]
    assert a["items"]["items"][1] == b["items"]["items"][1]
    assert a["items"]["items"][2]["prompt_sha256"] != b["items"]["items"][2]["prompt_sha256"]


def test_judge_and_environment_enter_the_record(dataset, workspace, registry) -> None:
    items = load_items(dataset, "eval", 3)
    ref = resolve_model(registry, "tiny", "default")
    spec = EvalSpec(**SPEC)
    env = environment()
    plain = build_proof(spec, items, ref, dataset, env=env)
    judged = build_proof(spec, items, ref, dataset, env=env,
                         judge={"model": "judge-7b", "manifest_sha256": "a" * 64})
    assert differing_sections(plain, judged) == ["judge"]
    other_torch = copy.deepcopy(env)
    other_torch["lockfile"]["torch"] = "0.0.1"
    assert differing_sections(plain, build_proof(spec, items, ref, dataset, env=other_torch)) \
        == ["environment"]
    other_host = copy.deepcopy(env)
    other_host["hardware"]["cpu_count"] = 512  # recorded, not hashed
    assert differing_sections(plain, build_proof(spec, items, ref, dataset, env=other_host)) == []


def test_tampering_is_detected_and_no_customer_text(dataset, workspace, registry) -> None:
    record = _proof(workspace, registry, dataset)
    tampered = copy.deepcopy(record)
    tampered["items"]["items"][0]["item_hash"] = "f" * 64
    assert verify_proof(tampered) == ["items"]
    tampered["hashes"]["items"] = "0" * 64
    assert "proof" in verify_proof(tampered)
    text = json.dumps(record)
    for it in load_items(dataset, "eval", 5):
        assert it["reference"] not in text
        for msg in it["prompt"]:
            if msg["role"] == "user":
                assert msg["content"] not in text


def test_read_proof_errors(tmp_path: Path) -> None:
    with pytest.raises(StudioError, match="no proof record"):
        read_proof(tmp_path)
    (tmp_path / PROOF_FILE).write_text('{"format": "other"}')
    with pytest.raises(StudioError, match="not a proof record"):
        read_proof(tmp_path)


def test_run_eval_records_the_judge(dataset, workspace, registry) -> None:
    judge = {"ref": "tiny", "weights": resolve_model(registry, "tiny", "default").weights}
    res = run_eval(EvalSpec(**SPEC), workspace, registry, tenant="default", model_ref="tiny",
                   dataset=dataset, judge=judge)
    record = read_proof(res.path)
    assert record["judge"] == judge and verify_proof(record) == []
