"""The vLLM child's gate: an ASGI middleware that answers 401 on every path but /health without the per-start key.

vLLM's own `VLLM_API_KEY` check covers `/v1`, `/v2` and `/inference` only; `/invocations`,
`/tokenize`, `/metrics`, `/version`, SageMaker's adapter routes and others stay open to any local
user who finds the port. engine/generation/vllm_server.py puts this folder on the child's
PYTHONPATH and passes `--middleware studio_vllm_gate.RequireKey`, so every request must carry
`Authorization: Bearer $VLLM_API_KEY`; without a key in the environment everything but /health is
refused. Self-contained: it runs in vLLM's interpreter, where `engine` is not importable.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

OPEN_PATHS = frozenset({"/health"})


class RequireKey:
    """Pure ASGI middleware (vLLM adds a class with `app.add_middleware`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        key = os.environ.get("VLLM_API_KEY", "")
        self.expected = f"Bearer {key}".encode() if key else None

    def _allowed(self, scope: dict[str, Any]) -> bool:
        if scope.get("path") in OPEN_PATHS:
            return True
        if self.expected is None:
            return False
        given = b""
        for name, value in scope.get("headers") or []:
            if name.lower() == b"authorization":
                given = value
                break
        return hmac.compare_digest(given, self.expected)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": "Unauthorized"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
