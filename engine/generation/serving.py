"""The serving backend interface: what the gateway needs from vLLM or in-process transformers.

Implemented by engine/generation/vllm_server.py and engine/serve/backends/hf.py.

Requests and responses are OpenAI-shaped dicts (the body of /v1/chat/completions or
/v1/completions, and what those endpoints return), so the vLLM backend can pass them through and
the transformers backend produces the same shapes. `body["model"]` is always the backend's
INTERNAL model id (the base model's id, or an adapter's internal name); the gateway maps the
names a tenant sees to internal ids and never forwards a name the tenant does not own.

Every response carries `usage` (prompt_tokens, completion_tokens); in a stream every chunk carries
the usage so far and the last chunk the final usage (vLLM's `stream_options: {"include_usage":
true, "continuous_usage_stats": true}`), which is what usage accounting counts — also for a stream
the client abandons before its end.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any


class BackendError(Exception):
    """The backend failed a request; `status` is the HTTP status the gateway should answer."""

    def __init__(self, message: str, status: int = 500, code: str = "backend_error"):
        super().__init__(message)
        self.status = status
        self.code = code


class Backend(ABC):
    """One base model plus any number of LoRA adapters, served under internal ids."""

    kind: str = "abstract"

    @abstractmethod
    async def start(self) -> None:
        """Load/launch; returns when requests can be served."""

    @abstractmethod
    async def stop(self) -> None:
        """Release everything `start` created (processes, memory). Idempotent."""

    @abstractmethod
    async def health(self) -> bool:
        """True when the backend answers requests now."""

    @property
    @abstractmethod
    def base_id(self) -> str:
        """Internal id of the base model."""

    @abstractmethod
    def adapters(self) -> dict[str, Path]:
        """Internal adapter id -> adapter directory, for every adapter loaded now."""

    @abstractmethod
    async def load_adapter(self, internal_id: str, path: Path) -> None:
        """Make a LoRA adapter servable under `internal_id` (at runtime, no restart)."""

    @abstractmethod
    async def unload_adapter(self, internal_id: str) -> None:
        """Stop serving an adapter; unknown ids raise BackendError(404)."""

    @abstractmethod
    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming chat completion (OpenAI `chat.completion` object)."""

    @abstractmethod
    def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """`chat.completion.chunk` objects; the last one carries `usage`."""

    @abstractmethod
    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming text completion (OpenAI `text_completion` object)."""

    @abstractmethod
    def complete_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """`text_completion` chunks; the last one carries `usage`."""

    async def events(self, kind: str, body: dict[str, Any]) -> AsyncIterator[str]:
        """The stream of `kind` ("chat" or "completion") as compact JSON texts, one per chunk,
        what the gateway relays (engine/serve/sse.py). A backend that receives the chunks as text
        (vLLM) passes them through; this default encodes the chunk objects."""
        chunks = self.chat_stream(body) if kind == "chat" else self.complete_stream(body)
        async for chunk in chunks:
            yield encode_chunk(chunk)


def encode_chunk(chunk: dict[str, Any]) -> str:
    """A chunk as compact JSON text, the form vLLM streams (and the gateway's relay edits)."""
    return json.dumps(chunk, separators=(",", ":"))
