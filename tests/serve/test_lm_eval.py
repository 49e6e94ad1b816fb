"""lm-eval-harness against the real gateway: a multiple-choice task through `local-completions`
(token-id prompts, echo, logprobs — how MMLU, ARC and HellaSwag run) and a generate_until task
through `local-chat-completions`. The loglikelihoods must equal lm-eval's own `hf` model on the
same weights (base model + the tenant's LoRA adapter) within 1e-4, item by item."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.serve.conftest import Served

lm_eval = pytest.importorskip("lm_eval")

QUESTIONS = [
    ("The sky is", ["blue", "green", "loud"], 0),
    ("Two plus two is", ["four", "five", "seven", "nine"], 0),
    ("My router light is", ["orange", "purple"], 1),
    ("Please restart the", ["hub", "moon", "river"], 0),
]


def _tasks(root: Path) -> Path:
    """Two local tasks (data from local JSON files, no hub): multiple_choice and generate_until."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                            for q, c, a in QUESTIONS), encoding="utf-8")
    (root / "studio_tiny_mc.yaml").write_text(f"""task: studio_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
""", encoding="utf-8")
    (root / "studio_tiny_gen.yaml").write_text(f"""task: studio_tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
""", encoding="utf-8")
    return root


def _run(model: str, model_args: dict[str, Any], task: str, tasks: Path, **kw: Any) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    kw.setdefault("batch_size", 2)
    return simple_evaluate(model=model, model_args=model_args, tasks=[task], log_samples=True,
                           task_manager=TaskManager(include_path=str(tasks)), random_seed=0,
                           numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0, **kw)


def _loglikelihoods(result: dict[str, Any], task: str) -> dict[int, list[float]]:
    return {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in result["samples"][task]}


def test_multiple_choice_through_local_completions_equals_hf(served: Served, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = _tasks(tmp_path / "tasks")
    model_dir = Path(served.backend.model_dir)
    install = getattr(served.backend, "install", None)
    if served.backend.kind == "vllm" and install is not None and install.device == "cpu":
        pytest.skip("vLLM's CPU build refuses prompt logprobs (tests/serve/test_logprobs.py)")
    name, peft = "support", {"peft": str(served.adapters["a1"])}
    monkeypatch.setenv("OPENAI_API_KEY", served.keys["acme"])  # lm-eval's bearer token
    api = _run("local-completions", {
        "model": name, "base_url": f"{served.base_url}/completions", "tokenizer": str(model_dir),
        "tokenizer_backend": "huggingface", "tokenized_requests": True, "num_concurrent": 1,
        "max_retries": 1, "max_length": 256}, "studio_tiny_mc", tasks)
    hf = _run("hf", {"pretrained": str(model_dir), **peft, "dtype": "float32", "device": "cpu",
                     "max_length": 256}, "studio_tiny_mc", tasks)
    got, want = _loglikelihoods(api, "studio_tiny_mc"), _loglikelihoods(hf, "studio_tiny_mc")
    assert sorted(got) == list(range(len(QUESTIONS)))
    for doc_id, values in want.items():
        assert got[doc_id] == pytest.approx(values, abs=1e-4), doc_id
    assert api["results"]["studio_tiny_mc"]["acc,none"] == hf["results"]["studio_tiny_mc"]["acc,none"]


def test_generate_until_through_local_chat_completions(served: Served, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = _tasks(tmp_path / "tasks")
    monkeypatch.setenv("OPENAI_API_KEY", served.keys["acme"])
    result = _run("local-chat-completions", {
        "model": "support", "base_url": f"{served.base_url}/chat/completions",
        "num_concurrent": 1, "max_retries": 1}, "studio_tiny_gen", tasks, apply_chat_template=True,
        batch_size=1)
    samples = result["samples"]["studio_tiny_gen"]
    assert len(samples) == len(QUESTIONS)
    assert all(isinstance(s["resps"][0][0], str) for s in samples)
    assert "exact_match,none" in result["results"]["studio_tiny_gen"]
