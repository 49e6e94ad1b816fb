"""vLLM's error answers as the text a client may see: the message, never pydantic's echo of the
request (`input_value=...`, which can hold the prompt), at most 1000 characters."""

from __future__ import annotations

import re
from typing import Any

import httpx

from engine.generation.serving import BackendError

_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=|\]\s*$|$)", re.S)


def redact(message: str) -> str:
    """Upstream error text without pydantic's echo of the request."""
    return _INPUT_VALUE.sub("input_value=<redacted>", message)[:1000]


def upstream_error(r: httpx.Response) -> str:
    """The redacted message of an error response from vLLM."""
    try:
        data = r.json()
    except ValueError:
        return f"HTTP {r.status_code}"
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return redact(str(err.get("message") or err.get("detail") or f"HTTP {r.status_code}"))
    return redact(str(err))


def stream_error(chunk: dict[str, Any]) -> BackendError:
    """The error a stream's error chunk (`{"error": {...}}` instead of choices) stands for."""
    err = chunk.get("error") if isinstance(chunk.get("error"), dict) else {}
    code = str(err.get("code", ""))
    return BackendError(redact(str(err.get("message", "stream error"))),
                        status=int(code) if code.isdigit() else 500, code="upstream_error")
