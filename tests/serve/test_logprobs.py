"""/v1/completions the way lm-eval-harness calls it (token-id prompts, echo, logprobs, max_tokens 0
or 1, batches of prompts) and chat logprobs: exact against the model's own forward pass on the
transformers backend, the same shapes on vLLM; fields a backend does not honour are a 400 naming
them, never dropped."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.serve.conftest import Served


def _reference(model_dir: Path, adapter: Path | None, ids: list[int]) -> list[float]:
    """log p(ids[i] | ids[:i]) for i >= 1 from a plain transformers (+ PEFT) forward pass."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1)
    return logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def _post(served: Served, who: str, body: dict[str, Any]) -> Any:
    with served.http(who) as http:
        return http.post("/v1/completions", json=body)


def _on_vllm_cpu(served: Served) -> bool:
    install = getattr(served.backend, "install", None)
    return served.backend.kind == "vllm" and install is not None and install.device == "cpu"


def test_prompt_logprobs_on_vllm_cpu_are_refused_not_fatal(served: Served) -> None:
    """vLLM's CPU engine dies on batched prompt logprobs once LoRA is on (every tenant's requests
    with it): the backend refuses them with a 400 and keeps serving."""
    if not _on_vllm_cpu(served):
        pytest.skip("only vLLM's CPU build has the crash")
    for model in ("support", "tiny"):
        r = _post(served, "acme", {"model": model, "prompt": [[5, 17, 42], [3, 8, 21]],
                                   "max_tokens": 1, "logprobs": 1, "echo": True})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_parameter"
    ok = _post(served, "acme", {"model": "support", "prompt": "hello", "max_tokens": 2,
                                "logprobs": 1})
    assert ok.status_code == 200, ok.text


def test_echo_logprobs_of_token_prompts_like_lm_eval(served: Served) -> None:
    if _on_vllm_cpu(served):
        pytest.skip("vLLM's CPU build refuses prompt logprobs (test above)")
    prompts = [[5, 17, 42, 99, 7], [3, 8, 21]]
    r = _post(served, "acme", {"model": "support", "prompt": prompts, "max_tokens": 1,
                               "temperature": 0, "logprobs": 1, "echo": True, "seed": 1234})
    assert r.status_code == 200, r.text
    body = r.json()
    choices = sorted(body["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1]
    assert body["usage"]["prompt_tokens"] == 8 and body["usage"]["completion_tokens"] == 2
    for prompt, choice in zip(prompts, choices):
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) \
            == len(prompt) + 1 == len(lp["text_offset"])
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        for value, top in zip(lp["token_logprobs"][1:], lp["top_logprobs"][1:]):
            assert value <= 0 and math.isfinite(value)
            assert 1 <= len(top) <= 2 and max(top.values()) >= value - 1e-6
        # the generated token is the greedy one: its logprob is the top alternative's
        assert lp["token_logprobs"][-1] == pytest.approx(max(lp["top_logprobs"][-1].values()), abs=1e-5)
    exact = 1e-5 if served.backend.kind == "transformers" else 1e-4  # vLLM: its own kernels
    for prompt, choice in zip(prompts, choices):
        want = _reference(served.backend.model_dir, served.adapters["a1"], prompt)
        got = choice["logprobs"]["token_logprobs"][1:len(prompt)]
        assert got == pytest.approx(want, abs=exact)


def test_max_tokens_zero_scores_the_prompt_only(served: Served) -> None:
    prompt = [5, 17, 42, 99, 7]
    r = _post(served, "acme", {"model": "tiny", "prompt": prompt, "max_tokens": 0, "logprobs": 0,
                               "echo": True})
    if served.backend is None or served.backend.kind != "transformers":
        return  # vLLM decides for itself whether max_tokens 0 is allowed
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 0
    want = _reference(served.backend.model_dir, None, prompt)
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(want, abs=1e-5)
    assert r.json()["choices"][0]["text"] == served.backend.tokenizer.decode(prompt)
    bad = _post(served, "acme", {"model": "tiny", "prompt": prompt, "max_tokens": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"


def test_string_prompts_and_plain_logprobs(served: Served) -> None:
    r = _post(served, "acme", {"model": "tiny", "prompt": ["hello there", "the cat"],
                               "max_tokens": 3, "temperature": 0, "logprobs": 2})
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) >= 1  # completion tokens only
        assert all(v is not None for v in lp["token_logprobs"])


def test_chat_logprobs(served: Served) -> None:
    with served.http("acme") as http:
        r = http.post("/v1/chat/completions", json={
            "model": "support", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "temperature": 0, "logprobs": True, "top_logprobs": 2})
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert 1 <= len(content) <= 4
    for item in content:
        assert set(item) >= {"token", "logprob", "bytes", "top_logprobs"}
        assert len(item["top_logprobs"]) == 2
        assert item["logprob"] == pytest.approx(item["top_logprobs"][0]["logprob"], abs=1e-5)


@pytest.mark.parametrize("field, value", [
    ("response_format", {"type": "json_object"}), ("tools", [{"type": "function", "function":
                                                            {"name": "f", "parameters": {}}}]),
    ("logit_bias", {"5": 10}), ("presence_penalty", 0.5), ("n", 2)])
def test_vllm_only_fields_are_refused_on_transformers(served: Served, field: str, value: Any) -> None:
    with served.http("acme") as http:
        r = http.post("/v1/chat/completions", json={
            "model": "support", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            field: value})
    if served.backend is not None and served.backend.kind == "transformers":
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "unsupported_parameter" and err["param"] == field
    else:  # vLLM answers them (tools with "auto" choice need vllm.extra_args, see docs)
        assert r.status_code == 200 or "tool" in r.json()["error"]["message"], r.text
        if field == "n" and r.status_code == 200:
            assert len(r.json()["choices"]) == 2
        if field == "response_format" and r.status_code == 200:
            assert r.json()["choices"][0]["message"]["content"] is not None


@pytest.mark.parametrize("field, value", [("functions", []), ("store", True), ("bogus_field", 1)])
def test_refused_and_unknown_fields_name_the_field(served: Served, field: str, value: Any) -> None:
    with served.http("acme") as http:
        r = http.post("/v1/chat/completions", json={
            "model": "support", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and field in r.json()["error"]["message"]


def test_no_op_values_and_user_are_accepted(served: Served) -> None:
    with served.http("acme") as http:
        r = http.post("/v1/chat/completions", json={
            "model": "support", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "n": 1, "presence_penalty": 0, "response_format": {"type": "text"}, "user": "u-1"})
    assert r.status_code == 200, r.text
