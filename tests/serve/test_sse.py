"""The stream relay (engine/serve/sse.py): the edits made on the chunk text agree with the same
edits made on the decoded chunk, whatever the model wrote, for every chunk shape vLLM streams."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.serve.sse import Relay, encode

INTERNAL = "_acme__support--x"
NAME = "support-bot"
USAGE = {"prompt_tokens": 11, "total_tokens": 14, "completion_tokens": 3}
HOSTILE = [
    "plain answer",
    "",
    f'"model":"{INTERNAL}" and "usage":{{"prompt_tokens":0}} "choices":[]',
    '"content":"x" \\" \\\\" "text":""',
    "ünïcödé ✓ \u2028 </script>",
]


def _chat_chunk(content: str | None, *, finish: str | None = None, role: bool = False,
                usage: dict[str, int] | None = USAGE) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
    if content is not None:
        delta["content"] = content
    chunk: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                             "model": INTERNAL, "choices": [{"index": 0, "delta": delta,
                                                             "logprobs": None,
                                                             "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _shapes() -> list[dict[str, Any]]:
    out = [_chat_chunk(None, role=True), _chat_chunk(None, finish="stop"),
           {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": INTERNAL,
            "choices": [], "usage": USAGE},
           _chat_chunk("x", usage=None)]
    for text in HOSTILE:
        out.append(_chat_chunk(text))
        out.append({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": INTERNAL,
                    "choices": [{"index": 0, "text": text, "logprobs": {
                        "tokens": [text], "token_logprobs": [-0.5], "text_offset": [0],
                        "top_logprobs": [{text: -0.5}]}, "finish_reason": None}],
                    "usage": USAGE})
        out.append(_chat_chunk(None) | {"choices": [{"index": 0, "delta": {
            "tool_calls": [{"index": 0, "function": {"arguments": text}}]}, "finish_reason": None}]})
    return out


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("chunk", _shapes())
def test_text_edits_equal_the_decoded_edits(chunk: dict[str, Any], include_usage: bool) -> None:
    relay = Relay(INTERNAL, NAME, include_usage)
    fast, usage, text = relay.edit(encode(chunk))
    ref, ref_usage, ref_text = relay.edit_decoded(json.loads(encode(chunk)))
    assert (usage, text) == (ref_usage, ref_text)
    assert (fast is None) == (ref is None)
    if fast is None:
        return
    sent = json.loads(fast)
    assert sent == json.loads(ref)
    assert sent["model"] == NAME and f'"model":"{INTERNAL}"' not in fast
    if sent["choices"]:
        assert sent.get("usage", "absent") == (None if include_usage else "absent")
        # what the model wrote is passed on untouched
        assert sent["choices"] == chunk["choices"]
    else:
        assert sent["usage"] == USAGE


def test_usage_only_chunk_goes_to_a_client_that_asked_only() -> None:
    last = encode({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": INTERNAL,
                   "choices": [], "usage": USAGE})
    assert Relay(INTERNAL, NAME, False).edit(last) == (None, USAGE, False)
    sent, usage, _ = Relay(INTERNAL, NAME, True).edit(last)
    assert usage == USAGE and json.loads(sent)["usage"] == USAGE


def test_first_text_is_told_apart_from_the_role_chunk() -> None:
    relay = Relay(INTERNAL, NAME, False)
    assert relay.edit(encode(_chat_chunk(None, role=True)))[2] is False
    assert relay.edit(encode(_chat_chunk("")))[2] is False
    assert relay.edit(encode(_chat_chunk("Hi")))[2] is True
    assert relay.edit(encode(_chat_chunk('"')))[2] is True  # an escaped quote is text too


@pytest.mark.parametrize("dump", [json.dumps, lambda c: json.dumps(c, indent=1)])
def test_other_spacing_falls_back_to_decoding(dump: Any) -> None:
    """A chunk not in compact form (another server's spacing) is decoded: same result."""
    chunk = _chat_chunk(HOSTILE[2])
    relay = Relay(INTERNAL, NAME, True)
    sent, usage, text = relay.edit(dump(chunk))
    assert usage == USAGE and text is True
    assert json.loads(sent) == json.loads(relay.edit_decoded(chunk)[0])
