"""Exact log-probabilities for the transformers backend: one forward pass over prompt + completion,
returned in OpenAI's two shapes.

- /v1/completions with `logprobs: k` (and `echo`): `{"tokens", "token_logprobs", "top_logprobs",
  "text_offset"}` — per token its text, its log-probability given everything before it (`None`
  for the prompt's first token, which has no context), and the k most likely tokens at that
  position plus the token itself — as vLLM and OpenAI return them. lm-eval-harness's
  loglikelihood (every multiple-choice benchmark) reads `token_logprobs` and `top_logprobs` of the
  echoed prompt.
- /v1/chat/completions with `logprobs: true, top_logprobs: k`: `{"content": [{"token", "logprob",
  "bytes", "top_logprobs": [...]}]}` for the generated tokens.

The values are the model's raw distribution — log-softmax of the logits in float32, before
temperature or top-p — like vLLM's default (`raw_logprobs`). Prompts of token ids are scored as
given (no special tokens added), so a client that tokenizes itself gets exactly its tokens scored.
"""

from __future__ import annotations

from typing import Any

Scores = tuple[list[float | None], list[dict[int, float] | None]]


def score(model: Any, ids: list[int], k: int, device: str) -> Scores:
    """(log-probability of each token given the ones before it, top-k alternatives per position);
    position 0 has neither (None)."""
    import torch

    x = torch.tensor([ids], device=device)
    with torch.inference_mode():
        logits = model(input_ids=x).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = x[0, 1:]
        token_lp = logp.gather(1, target[:, None])[:, 0].tolist()
        if k > 0:
            values, index = logp.topk(k, dim=-1)
            top_values, top_index = values.tolist(), index.tolist()
    tops: list[dict[int, float] | None] = [None]
    for i, lp in enumerate(token_lp):
        alternatives = dict(zip(top_index[i], top_values[i])) if k > 0 else {}
        alternatives.setdefault(ids[i + 1], lp)
        tops.append(alternatives)
    return [None, *token_lp], tops


def _pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    return [tokenizer.decode([t], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            for t in ids]


def completion_logprobs(tokenizer: Any, ids: list[int], scores: Scores, start: int,
                        k: int) -> dict[str, Any]:
    """The legacy `logprobs` object for tokens ids[start:] (start 0: the echoed prompt too)."""
    token_lp, tops = scores
    pieces = _pieces(tokenizer, ids[start:])
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    top_logprobs: list[dict[str, float] | None] = []
    for pos in range(start, len(ids)):
        top = tops[pos]
        if top is None:
            top_logprobs.append(None)
            continue
        named: dict[str, float] = {}
        for token, lp in sorted(top.items(), key=lambda kv: -kv[1])[:k]:
            named.setdefault(_pieces(tokenizer, [token])[0], lp)
        named.setdefault(pieces[pos - start], top[ids[pos]])  # the token itself is always there
        top_logprobs.append(named)
    return {"tokens": pieces, "token_logprobs": token_lp[start:], "top_logprobs": top_logprobs,
            "text_offset": offsets}


def chat_logprobs(tokenizer: Any, ids: list[int], scores: Scores, start: int,
                  k: int) -> dict[str, Any]:
    """The chat `logprobs` object for the generated tokens ids[start:]."""
    token_lp, tops = scores
    content = []
    for pos in range(start, len(ids)):
        piece = _pieces(tokenizer, [ids[pos]])[0]
        top = tops[pos] or {}
        ranked = sorted(top.items(), key=lambda kv: -kv[1])[:k]
        alternatives = []
        for token, lp in ranked:
            text = _pieces(tokenizer, [token])[0]
            alternatives.append({"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))})
        content.append({"token": piece, "logprob": token_lp[pos],
                        "bytes": list(piece.encode("utf-8")), "top_logprobs": alternatives})
    return {"content": content}
