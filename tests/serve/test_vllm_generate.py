"""Eval generation through vLLM (engine/generation/vllm_generation.py) equals the transformers backend's.

One real vLLM server (CPU build) for the module; skipped when no vLLM interpreter is installed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from engine.generation.vllm_env import SETUP_HINT, find_vllm
from tests.serve.vllm_helpers import build_vllm_tiny, make_lora

PROMPTS = [
    [{"role": "user", "content": "Hello, my order #4521 has not arrived."}],
    [{"role": "system", "content": "You are a helpful customer support assistant."},
     {"role": "user", "content": "How do I reset your password?"}],
    [{"role": "user", "content": "The quick brown fox"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "My invoice was charged twice. Can you help me?"}],
]


@pytest.fixture(scope="module")
def backends(session_dir: Path) -> Any:
    if find_vllm() is None:
        pytest.skip(f"no vLLM interpreter found; {SETUP_HINT}")
    from engine.generation.transformers_backend import TransformersBackend
    from engine.generation.vllm_generation import VLLMGenerationBackend

    root = session_dir / "vllm-eval"
    model = build_vllm_tiny(root / "tiny-llama-vllm")
    adapter = make_lora(model, root / "adapter", seed=7)
    vllm = VLLMGenerationBackend(model, adapter, cache_dir=root / "tmp", max_model_len=512)
    yield vllm, TransformersBackend(model, adapter, threads=1)
    vllm.close()


def test_greedy_generation_equals_transformers(backends: Any) -> None:
    vllm, hf = backends
    got = vllm.generate(PROMPTS, max_new_tokens=20, batch_size=3)
    want = hf.generate(PROMPTS, max_new_tokens=20, batch_size=2)
    assert got == want
    assert len(set(got)) > 1 and all(got)
    # deterministic: the same prompts in another batch size give the same outputs
    assert vllm.generate(PROMPTS[::-1], max_new_tokens=20, batch_size=5) == got[::-1]


def test_choice_logprobs_match_transformers(backends: Any) -> None:
    vllm, hf = backends
    choices = ["1", "2", "3"]
    got = vllm.choice_logprobs(PROMPTS[:3], choices)
    want = hf.choice_logprobs(PROMPTS[:3], choices)
    for g_row, w_row in zip(got, want):
        assert all(v < 0 for v in g_row)
        for g, w in zip(g_row, w_row):
            assert math.isclose(g, w, abs_tol=2e-3), (got, want)
    with pytest.raises(ValueError, match="need exactly one"):
        vllm.choice_logprobs(PROMPTS[:1], ["two tokens here"])


def test_describe_names_vllm(backends: Any) -> None:
    vllm, hf = backends
    info = vllm.describe()
    assert info["backend"] == "vllm" and info["device"] in {"cpu", "cuda"}
    assert info["chat_template_sha256"] == hf.describe()["chat_template_sha256"]
    assert info != hf.describe()       # a different cache key than transformers' outputs


def test_an_eval_suite_with_backend_vllm_scores_like_transformers(session_dir: Path, tmp_path: Path) -> None:
    """`eval.backend: vllm` end to end: the suite runner starts vLLM for the model, generates,
    grades and stops it; outputs and scores equal the transformers backend's."""
    import json

    from engine.config import StudioConfig
    from engine.eval.suite import run_suite
    from engine.models.store import import_model
    from engine.registry import Registry
    from engine.workspace import Workspace

    if find_vllm() is None:
        pytest.skip(f"no vLLM interpreter found; {SETUP_HINT}")
    model = build_vllm_tiny(session_dir / "vllm-eval" / "tiny-llama-vllm")
    ws = Workspace(tmp_path / "ws").ensure()
    registry = Registry(ws.registry_path)
    import_model(ws, registry, str(model), "tiny-vllm")
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": i, "messages": p, "ideal": "x"}) + "\n"
                             for i, p in enumerate(PROMPTS)))
    outputs = {}
    for backend in ("transformers", "vllm"):
        cfg = StudioConfig.model_validate({
            "kind": "eval", "tenant": "default",
            "eval": {"models": ["tiny-vllm"], "backend": backend, "cache": False,
                     "vllm": {"max_model_len": 512, "dtype": "float32"},
                     "generation": {"max_new_tokens": 16, "batch_size": 5},
                     "suite": {"name": "s", "tasks": [{"name": "t", "path": str(items),
                                                       "graders": [{"type": "contains"}]}]}}})
        with ws.job_tmp("default"):
            (res,) = run_suite(cfg.eval, ws, registry, tenant="default", model_ref="tiny-vllm")
        rows = [json.loads(line) for line in (res.path / "outputs.jsonl").read_text().splitlines()]
        outputs[backend] = [r["output"] for r in rows]
    assert outputs["vllm"] == outputs["transformers"] and all(outputs["vllm"])
