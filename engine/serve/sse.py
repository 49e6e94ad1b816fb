"""The stream relay: each upstream chunk of a streamed completion passed on to the client with the
few edits the gateway must make, without decoding and re-encoding the whole chunk.

A backend streams chunks as compact JSON text (vLLM's own SSE payloads, passed through as they
arrive; the transformers backend's chunks, encoded the same way). Per chunk the relay:
- puts the name the tenant called in place of the internal model id (which must not reach the
  client: it names the tenant's adapter as the backend knows it);
- reads the running `usage` that the gateway asks every backend chunk to carry (so a stream cut
  short is billed what it generated), and hides it from the client as OpenAI does: `"usage":null`
  on chunks with choices when the client asked for `stream_options.include_usage`, no `usage`
  key otherwise, and the final usage-only chunk only when asked for;
- tells whether the chunk carries text (for the time-to-first-token metric).

The edits are made on the text. Inside a JSON string every `"` is escaped, so the patterns looked
for (`"model":"<id>"`, `"usage":`, `"choices":[]`, `"content":"`, `"text":"`) can only be keys of
the chunk itself, never model output, whatever the output contains. A chunk not in the expected
compact form (other spacing or key layout) is decoded and re-encoded instead: slower, same result.
"""

from __future__ import annotations

import json
from typing import Any

from engine.generation.serving import encode_chunk as encode

_DECODER = json.JSONDecoder()
_USAGE = '"usage":'
_EMPTY_CHOICES = '"choices":[]'


class Relay:
    """The edits for one stream: `internal` is the model id the backend answers with, `name` the
    model the client asked for."""

    def __init__(self, internal: str, name: str, include_usage: bool):
        self.model_from = '"model":' + json.dumps(internal)
        self.model_to = '"model":' + json.dumps(name)
        self.name = name
        self.include_usage = include_usage

    def edit(self, payload: str) -> tuple[str | None, dict[str, Any] | None, bool]:
        """(text to send or None to drop, the usage so far or None, whether it carries text)."""
        at = payload.find(self.model_from)
        if at < 0:
            return self.edit_decoded(json.loads(payload))
        out = payload[:at] + self.model_to + payload[at + len(self.model_from):]
        usage: dict[str, Any] | None = None
        start = out.find(_USAGE)
        if start >= 0:
            value = start + len(_USAGE)
            while out[value:value + 1].isspace():
                value += 1
            try:
                parsed, end = _DECODER.raw_decode(out, value)
            except ValueError:
                return self.edit_decoded(json.loads(payload))
            if parsed is not None and not isinstance(parsed, dict):
                return self.edit_decoded(json.loads(payload))
            usage = parsed or None
        empty = _EMPTY_CHOICES in out or '"choices"' not in out
        if empty:  # the usage-only chunk at the end: only for a client that asked for usage
            return (out if self.include_usage else None), usage, False
        if start >= 0:
            if self.include_usage:
                out = out[:start] + '"usage":null' + out[end:]
            elif out[start - 1:start] == ",":
                out = out[:start - 1] + out[end:]
            elif out[end:end + 1] == ",":
                out = out[:start] + out[end + 1:]
            else:
                return self.edit_decoded(json.loads(payload))
        elif self.include_usage:
            out = out[:-1] + ',"usage":null}' if out.endswith("}") else out
        return out, usage, _has_text(out)

    def edit_decoded(self, chunk: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, bool]:
        """`edit` on a decoded chunk (the reference the text edits must agree with)."""
        usage = chunk.get("usage") or None
        choices = chunk.get("choices")
        out = {k: v for k, v in chunk.items() if k != "usage"}
        out["model"] = self.name
        if not choices:
            return (encode({**out, "usage": usage}) if self.include_usage else None), usage, False
        if self.include_usage:
            out["usage"] = None
        text = any(c.get("text") or (c.get("delta") or {}).get("content") for c in choices)
        return encode(out), usage, bool(text)


def _has_text(payload: str) -> bool:
    for key in ('"content":"', '"text":"'):
        at = payload.find(key)
        while at >= 0:
            if payload[at + len(key):at + len(key) + 1] != '"':
                return True
            at = payload.find(key, at + 1)
    return False
