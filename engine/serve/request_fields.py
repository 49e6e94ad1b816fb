"""Which OpenAI request fields the gateway accepts, per endpoint and backend, and the 400 for the rest.

No field is ever dropped silently. Each field of /v1/chat/completions and /v1/completions is one of:

  served      validated here and honoured by both backends (the transformers backend computes it
              exactly, vLLM does it natively);
  vllm        passed through to vLLM (which implements it) after a type check; on the
              transformers backend a request that uses it — any value other than the no-op
              default — is refused: 400 `unsupported_parameter` naming the field;
  ignored     accepted and ignored, as documented (`user`: OpenAI uses it for abuse monitoring
              only; it never changes an answer);
  refused     known OpenAI fields no backend here implements: 400 `unsupported_parameter`.

Anything else is refused like OpenAI does ("Unrecognized request argument supplied"), with the
same 400. docs/serving.md shows this table; tests/serve/test_request_fields.py checks the two agree.
"""

from __future__ import annotations

from typing import Any

SERVED, VLLM, IGNORED, REFUSED = "served", "vllm", "ignored", "refused"

# endpoint -> field -> policy
FIELDS: dict[str, dict[str, str]] = {
    "chat": {
        "model": SERVED, "messages": SERVED, "max_tokens": SERVED, "max_completion_tokens": SERVED,
        "temperature": SERVED, "top_p": SERVED, "seed": SERVED, "stop": SERVED, "stream": SERVED,
        "stream_options": SERVED, "logprobs": SERVED, "top_logprobs": SERVED, "n": VLLM,
        "response_format": VLLM, "tools": VLLM, "tool_choice": VLLM, "parallel_tool_calls": VLLM,
        "logit_bias": VLLM, "presence_penalty": VLLM, "frequency_penalty": VLLM, "user": IGNORED,
        "functions": REFUSED, "function_call": REFUSED, "audio": REFUSED, "modalities": REFUSED,
        "prediction": REFUSED, "store": REFUSED, "metadata": REFUSED, "service_tier": REFUSED,
        "reasoning_effort": REFUSED, "web_search_options": REFUSED,
    },
    "completion": {
        "model": SERVED, "prompt": SERVED, "max_tokens": SERVED, "temperature": SERVED,
        "top_p": SERVED, "seed": SERVED, "stop": SERVED, "stream": SERVED, "stream_options": SERVED,
        "echo": SERVED, "logprobs": SERVED, "n": VLLM, "best_of": VLLM, "logit_bias": VLLM,
        "presence_penalty": VLLM, "frequency_penalty": VLLM, "user": IGNORED, "suffix": REFUSED,
    },
}

# message fields, per backend: the transformers backend renders role and content only
MESSAGE_FIELDS = {"transformers": ("role", "content"),
                  "vllm": ("role", "content", "name", "tool_calls", "tool_call_id")}

# values of a `vllm` field that change nothing (accepted on the transformers backend too)
_NO_OP: dict[str, tuple[Any, ...]] = {
    "n": (1,), "best_of": (1,), "logit_bias": ({},), "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0), "tools": ([],), "tool_choice": ("none",),
    "parallel_tool_calls": (True, False), "response_format": ({"type": "text"},),
}

# the JSON type each passed-through field must have (vLLM checks the rest)
_TYPES: dict[str, tuple[type, ...]] = {
    "n": (int,), "best_of": (int,), "logit_bias": (dict,), "presence_penalty": (int, float),
    "frequency_penalty": (int, float), "tools": (list,), "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,), "response_format": (dict,),
}


class FieldError(ValueError):
    """A field the request may not carry: (field, message, code)."""

    def __init__(self, field: str, message: str, code: str = "unsupported_parameter"):
        super().__init__(message)
        self.field, self.message, self.code = field, message, code


def passthrough(body: dict[str, Any], kind: str, backend: str) -> dict[str, Any]:
    """Refuse what this backend cannot honour (FieldError) and return the `vllm` fields to pass on
    (type-checked; on the transformers backend only their no-op values are accepted, then dropped
    since they change nothing)."""
    table = FIELDS[kind]
    out: dict[str, Any] = {}
    for key, value in body.items():
        policy = table.get(key)
        if policy is None:
            raise FieldError(key, f"Unrecognized request argument supplied: {key}")
        if policy == REFUSED:
            raise FieldError(key, f"'{key}' is not supported by this server")
        if policy != VLLM or value is None:
            continue
        types = _TYPES[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise FieldError(key, f"'{key}' has the wrong type", "invalid_value")
        if backend == "vllm":
            out[key] = value
        elif value not in _NO_OP[key]:
            raise FieldError(key, f"'{key}' is not supported by the transformers backend (serve "
                                  "with backend: vllm for it)")
    return out


def policy_table() -> list[tuple[str, str, str, str]]:
    """(endpoint, field, transformers, vllm) rows: what docs/serving.md's table shows."""
    words = {SERVED: ("supported", "supported"), VLLM: ("refused (400)", "supported"),
             IGNORED: ("ignored", "ignored"), REFUSED: ("refused (400)", "refused (400)")}
    rows = []
    for kind, path in (("chat", "/v1/chat/completions"), ("completion", "/v1/completions")):
        for key, policy in FIELDS[kind].items():
            hf, vllm = words[policy]
            rows.append((path, key, hf, vllm))
    return rows
