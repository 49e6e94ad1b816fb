"""The transformers backend's batch plumbing: one request's state, the streamer that turns each
step's new tokens into text per request, the stopping criterion, and small helpers (hf.py uses
them; the worker thread and the event loop share `Request`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.serve.backends.hf import HFBackend

DONE = "done"
DELTA = "delta"
ERROR = "error"


@dataclass
class Request:
    """One generation request, shared between the event loop and the worker thread."""

    adapter: str | None
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[str, Any]]
    gen_ids: list[int] = field(default_factory=list)
    prefix_offset: int = 0  # incremental detokenization window (as in TGI/vLLM)
    read_offset: int = 0
    text: str = ""
    emitted: int = 0
    finished: bool = False
    finish_reason: str | None = None
    cancelled: bool = False

    @property
    def group_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share a batch (a seeded request always runs alone)."""
        sampling = ("greedy",) if self.temperature == 0 else ("sample", self.temperature, self.top_p)
        return (self.adapter, sampling, self.seed if self.seed is None else id(self))

    def send(self, kind: str, payload: Any = None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))


def stop_holdback(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a stop string."""
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return hold


class BatchStreamer:
    """Receives each step's new tokens from `generate`; decodes, stops and emits per request."""

    def __init__(self, backend: "HFBackend", reqs: list[Request]):
        self.backend, self.reqs = backend, reqs
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate first hands over the (padded) prompts
            self.prompt_seen = True
            return
        tokens = value.view(-1).tolist()
        for req, token in zip(self.reqs, tokens):
            if not req.finished and not req.cancelled:
                self.backend._advance(req, int(token))

    def end(self) -> None:
        for req in self.reqs:
            if not req.finished and not req.cancelled:
                self.backend._finish(req, "length")


class StopRows:
    """A stopping criterion: a row is done when its request finished (eos, stop string, max_tokens)."""

    def __init__(self, reqs: list[Request]):
        self.reqs = reqs

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.tensor([r.finished or r.cancelled for r in self.reqs], dtype=torch.bool,
                            device=input_ids.device)


def usage_so_far(req: Request) -> dict[str, int]:
    """Tokens of the prompt and tokens generated so far (the worker may be a token ahead)."""
    done = len(req.gen_ids)
    return {"prompt_tokens": len(req.prompt_ids), "completion_tokens": done,
            "total_tokens": len(req.prompt_ids) + done}
