"""OpenAI wire format at the gateway: the capped request body, request checks (messages never
echoed; which fields each backend takes is engine/serve/request_fields.py), error bodies."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from engine.serve.request_fields import MESSAGE_FIELDS, FieldError, passthrough

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
          503: "server_error"}
ROLES = {"system", "developer", "user", "assistant", "tool"}


class ApiError(Exception):
    """An error answered as an OpenAI error body; the message never contains customer text."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def model_not_found(name: str | None) -> ApiError:
    shown = name if isinstance(name, str) and len(name) <= 128 and name.isprintable() else "(invalid)"
    return ApiError(404, f"The model `{shown}` does not exist or you do not have access to it.",
                    "model_not_found", "model")


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than this server accepts ({limit} bytes; "
                    "serve.max_request_bytes)", "request_too_large")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes: from the
    Content-Length header before reading anything, else (chunked uploads) while counting the chunks
    as they arrive — a larger body is never held in memory whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "invalid Content-Length header", "invalid_request")
        if int(declared) > limit:
            raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    return body


def _bad(param: str, what: str) -> ApiError:
    return ApiError(400, f"'{param}' {what}", "invalid_value", param)


def _number(body: dict[str, Any], key: str, low: float, high: float, *, low_open: bool = False
            ) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(key, "must be a number")
    if isinstance(value, float) and not math.isfinite(value):  # JSON NaN/Infinity: no bound catches them
        raise _bad(key, "must be a finite number")
    if value > high or value < low or (low_open and value == low):
        raise _bad(key, f"must be {'>' if low_open else '>='} {low:g} and <= {high:g}")
    return float(value)


def _integer(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, "must be an integer")
    if not low <= value <= high:
        raise _bad(key, f"must be between {low} and {high}")
    return value


MAX_PROMPTS = 64  # prompts in one /v1/completions request (lm-eval sends batches of them)
MAX_LOGPROBS = 20  # top alternatives per token (vLLM's default cap; OpenAI's is 5 and 20)


def _messages(body: dict[str, Any], backend: str) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "must be a non-empty list")
    allowed = MESSAGE_FIELDS[backend]
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(f"messages[{i}]", "needs a role (system, developer, user, assistant or tool)")
        extra = sorted(k for k in m if k not in allowed)
        if extra:
            raise ApiError(400, f"'messages[{i}].{extra[0]}' is not supported by the {backend} "
                           "backend", "unsupported_parameter", f"messages[{i}].{extra[0]}")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _bad(f"messages[{i}].content", "must be a string or a list of content parts")
        if isinstance(content, list) and any(not isinstance(p, dict) or p.get("type") != "text"
                                             or not isinstance(p.get("text"), str) for p in content):
            raise _bad(f"messages[{i}].content", "supports text parts only")
        kept = {k: m[k] for k in allowed if k in m and k not in ("role", "content")}
        out.append({"role": m["role"], "content": m.get("content") or "", **kept})
    return out


def _prompt(body: dict[str, Any]) -> str | list[Any]:
    """A string, a list of strings, a list of token ids, or a list of token-id lists (as OpenAI
    and vLLM take it); returned as given, checked."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        if not prompt:
            raise _bad("prompt", "must not be empty")
        return prompt
    if not isinstance(prompt, list) or not prompt:
        raise _bad("prompt", "must be a string, a list of strings, a list of token ids or a list "
                   "of token-id lists")

    def ids(value: Any) -> bool:
        return (isinstance(value, list) and bool(value)
                and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2 ** 31
                        for t in value))

    if ids(prompt):
        return prompt
    if len(prompt) > MAX_PROMPTS:
        raise _bad("prompt", f"may hold at most {MAX_PROMPTS} prompts")
    if all(isinstance(p, str) and p for p in prompt) or all(ids(p) for p in prompt):
        return prompt
    raise _bad("prompt", "must be a string, a list of non-empty strings, a list of token ids or a "
               "list of non-empty token-id lists")


def prompt_count(prompt: str | list[Any]) -> int:
    """How many prompts a checked `prompt` holds."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return 1
    return len(prompt)


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise _bad(key, "must be true or false")
    return bool(value)


def check_request(body: dict[str, Any], kind: str, *, default_max_tokens: int,
                  max_tokens_limit: int, backend: str = "transformers") -> dict[str, Any]:
    """The fields the backend gets, validated. A field this backend does not honour is refused
    (400 unsupported_parameter naming it), never dropped: see engine/serve/request_fields.py."""
    try:
        out: dict[str, Any] = passthrough(body, kind, backend)
    except FieldError as exc:
        raise ApiError(400, exc.message, exc.code, exc.field) from None
    if kind == "chat":
        out["messages"] = _messages(body, backend)
        if _flag(body, "logprobs"):
            out["logprobs"] = True
            top = _integer(body, "top_logprobs", 0, MAX_LOGPROBS)
            out["top_logprobs"] = top or 0
        elif body.get("top_logprobs") is not None:
            raise _bad("top_logprobs", "needs 'logprobs': true")
    else:
        out["prompt"] = _prompt(body)
        out["echo"] = _flag(body, "echo")
        logprobs = _integer(body, "logprobs", 0, MAX_LOGPROBS)
        if logprobs is not None:
            out["logprobs"] = logprobs
    _integer(body, "n", 1, 16)  # the range; passthrough() forwarded it to vLLM (n: 1 elsewhere)
    max_tokens = _integer(body, "max_completion_tokens", 1, max_tokens_limit)
    if max_tokens is None:
        low = 0 if kind != "chat" and out.get("echo") else 1  # 0: score the prompt only
        max_tokens = _integer(body, "max_tokens", low, max_tokens_limit)
    out["max_tokens"] = default_max_tokens if max_tokens is None else max_tokens
    for key, value in (("temperature", _number(body, "temperature", 0.0, 2.0)),
                       ("top_p", _number(body, "top_p", 0.0, 1.0, low_open=True)),
                       ("seed", _integer(body, "seed", -(2 ** 63), 2 ** 63 - 1))):
        if value is not None:
            out[key] = value
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            raise _bad("stop", "must be a string or a list of up to 4 non-empty strings")
        out["stop"] = stop
    out["stream"] = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options", "must be an object")
    out["include_usage"] = bool((options or {}).get("include_usage"))
    if out["stream"] and kind != "chat" and prompt_count(out["prompt"]) > 1:
        raise _bad("prompt", "must be one prompt when 'stream' is true")
    return out
