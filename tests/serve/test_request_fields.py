"""The request-field policy: every field is served, passed to vLLM, ignored or refused (a 400
naming it) — and docs/serving.md shows exactly the table the code enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.serve.api import ApiError, check_request
from engine.serve.request_fields import FIELDS, FieldError, passthrough, policy_table

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _check(body: dict, kind: str = "chat", backend: str = "transformers") -> dict:
    return check_request(body, kind, default_max_tokens=16, max_tokens_limit=64, backend=backend)


def test_docs_table_matches_the_code() -> None:
    doc = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    rows = [f"| `{path}` | `{key}` | {hf} | {vllm} |" for path, key, hf, vllm in policy_table()]
    missing = [r for r in rows if r not in doc]
    assert not missing, missing
    documented = [line for line in doc.splitlines()
                  if line.startswith("| `/v1/chat/completions` |") or line.startswith("| `/v1/completions` |")]
    assert sorted(documented) == sorted(rows)  # nothing documented that the code does not do


def test_every_policy_is_one_of_four() -> None:
    assert {p for table in FIELDS.values() for p in table.values()} <= {"served", "vllm", "ignored",
                                                                        "refused"}


@pytest.mark.parametrize("kind, field", [(k, f) for k, t in FIELDS.items() for f, p in t.items()
                                         if p == "refused"])
def test_refused_fields_name_themselves_on_both_backends(kind: str, field: str) -> None:
    for backend in ("transformers", "vllm"):
        with pytest.raises(FieldError) as err:
            passthrough({field: 1}, kind, backend)
        assert err.value.field == field and err.value.code == "unsupported_parameter"


def test_vllm_fields_pass_through_on_vllm_and_only_as_no_ops_on_transformers() -> None:
    body = {**CHAT, "response_format": {"type": "json_object"}, "tool_choice": "auto",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "logit_bias": {"5": 3}, "presence_penalty": 0.5, "n": 2}
    out = _check(body, backend="vllm")
    for key in ("response_format", "tools", "tool_choice", "logit_bias", "presence_penalty", "n"):
        assert out[key] == body[key]
    for key in ("response_format", "tools", "logit_bias", "presence_penalty", "n"):
        with pytest.raises(ApiError) as err:
            _check({**CHAT, key: body[key]})
        assert err.value.param == key and err.value.code == "unsupported_parameter"
    out = _check({**CHAT, "n": 1, "presence_penalty": 0, "response_format": {"type": "text"},
                  "user": "u"})
    assert "user" not in out and "response_format" not in out


def test_wrong_types_of_passed_through_fields() -> None:
    for key, value in (("n", True), ("tools", {}), ("logit_bias", []), ("presence_penalty", "1")):
        with pytest.raises(ApiError) as err:
            _check({**CHAT, key: value}, backend="vllm")
        assert err.value.param == key


def test_tool_messages_only_where_the_backend_renders_them() -> None:
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    body = {**CHAT, "messages": [CHAT["messages"][0], call,
                                 {"role": "tool", "tool_call_id": "c1", "content": "42"}]}
    out = _check(body, backend="vllm")
    assert out["messages"][1]["tool_calls"] == call["tool_calls"]
    assert out["messages"][2]["tool_call_id"] == "c1"
    with pytest.raises(ApiError) as err:
        _check(body)
    assert err.value.param == "messages[1].tool_calls"


@pytest.mark.parametrize("prompt, ok", [
    ("text", True), (["a", "b"], True), ([1, 2, 3], True), ([[1, 2], [3]], True),
    ("", False), ([], False), ([[]], False), ([1, "a"], False), ([[1], "a"], False),
    ([-1], False), ([True], False), (["a"] * 65, False), (3, False)])
def test_prompt_forms(prompt: object, ok: bool) -> None:
    body = {"model": "m", "prompt": prompt}
    if ok:
        assert _check(body, "completion")["prompt"] == prompt
    else:
        with pytest.raises(ApiError) as err:
            _check(body, "completion")
        assert err.value.param == "prompt"


def test_logprob_fields() -> None:
    out = _check({"model": "m", "prompt": [1, 2], "echo": True, "logprobs": 5, "max_tokens": 0},
                 "completion")
    assert (out["echo"], out["logprobs"], out["max_tokens"]) == (True, 5, 0)
    for body, param in (({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
                        ({"model": "m", "prompt": "x", "logprobs": 21}, "logprobs"),
                        ({"model": "m", "prompt": "x", "echo": "yes"}, "echo"),
                        ({"model": "m", "prompt": ["a", "b"], "stream": True}, "prompt")):
        with pytest.raises(ApiError) as err:
            _check(body, "completion")
        assert err.value.param == param
    out = _check({**CHAT, "logprobs": True, "top_logprobs": 3})
    assert (out["logprobs"], out["top_logprobs"]) == (True, 3)
    with pytest.raises(ApiError) as err:
        _check({**CHAT, "top_logprobs": 3})
    assert err.value.param == "top_logprobs"
