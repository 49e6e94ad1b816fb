"""Incremental detokenization: streamed deltas add up to the full decode, multi-byte characters and stops included."""

from __future__ import annotations

import asyncio

import pytest

from engine.models.loading import load_tokenizer
from engine.serve.backends.hf import HFBackend
from engine.serve.backends.hf_batch import Request

TEXT = "Grüße 👋🏽 from Zürich — naïve café, 東京 too. Done"


def _feed(tiny_model_dir, ids, stop=(), max_tokens=10_000):
    backend = HFBackend(tiny_model_dir, "tiny")
    backend.tokenizer = load_tokenizer(tiny_model_dir)
    backend.eos_ids = {backend.tokenizer.eos_token_id}
    loop = asyncio.new_event_loop()
    try:
        req = Request(adapter=None, prompt_ids=[1], max_tokens=max_tokens, temperature=0.0, top_p=1.0,
                       stop=list(stop), seed=None, loop=loop, events=asyncio.Queue())
        for token in ids:
            if req.finished:
                break
            backend._advance(req, token)
        if not req.finished:
            backend._finish(req, "length")
        loop.run_until_complete(asyncio.sleep(0))  # deliver the thread-safe callbacks
        events = []
        while not req.events.empty():
            events.append(req.events.get_nowait())
    finally:
        loop.close()
    deltas = "".join(p for k, p in events if k == "delta")
    done = [p for k, p in events if k == "done"]
    return deltas, done[0], req


def test_deltas_add_up_to_the_full_decode(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert len(ids) > len(TEXT) // 2  # many byte-level pieces: characters span several tokens
    deltas, done, req = _feed(tiny_model_dir, ids)
    assert deltas == tok.decode(ids) == TEXT and "\ufffd" not in deltas
    assert done["usage"]["completion_tokens"] == len(ids) and done["finish_reason"] == "length"


@pytest.mark.parametrize("stop", ["Zürich", "👋", "café, 東", "not-there"])
def test_stop_strings_cut_the_stream_exactly(tiny_model_dir, stop):
    tok = load_tokenizer(tiny_model_dir)
    ids = tok.encode(TEXT, add_special_tokens=False)
    deltas, done, _ = _feed(tiny_model_dir, ids, stop=[stop])
    expected = TEXT.split(stop)[0]
    assert deltas == expected
    assert done["finish_reason"] == ("length" if stop == "not-there" else "stop")


def test_eos_and_max_tokens(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    ids = tok.encode("Hello there", add_special_tokens=False)
    deltas, done, _ = _feed(tiny_model_dir, ids + [tok.eos_token_id] + ids)
    assert deltas == "Hello there" and done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == len(ids) + 1  # the end-of-turn token counts
    deltas, done, _ = _feed(tiny_model_dir, ids, max_tokens=1)
    assert deltas == tok.decode(ids[:1]) and done["usage"]["completion_tokens"] == 1
