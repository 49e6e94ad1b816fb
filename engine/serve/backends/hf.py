"""In-process transformers serving backend: one base model plus PEFT LoRA adapters, batched, off the event loop.

Requests wait in an inbox for `batch_wait_ms`; the ones that share an adapter and sampling settings
are generated together in one left-padded `generate` call (up to `max_batch_size`). One worker
thread runs every generation and every adapter load/unload under one lock, so an adapter switch
never happens in the middle of a batch. Tokens are streamed one by one through a batch streamer
that decodes each request incrementally, applies its stop strings and `max_tokens`, and tells
`generate` (through a stopping criterion) which rows are finished. Usage counts are exact: the
prompt's tokens and every generated token up to and including the end-of-turn (or stop) token;
every stream chunk carries the usage so far, so a stream that ends early is billed what it
generated. Prompts are tokenized on a separate thread, never on the event loop (a prompt of
megabytes takes seconds). Only safetensors adapters are loaded.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import nullcontext
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.generation.serving import Backend, BackendError
from engine.errors import StudioError
from engine.models.loading import check_adapter, load_causal_lm, load_tokenizer
from engine.serve.backends.hf_batch import (DELTA, DONE, ERROR, BatchStreamer, Request, StopRows,
                                            stop_holdback, usage_so_far)
from engine.serve.backends.hf_logprobs import chat_logprobs, completion_logprobs, score


class HFBackend(Backend):
    """A registry base model on CPU (or CUDA when present) with runtime-loadable LoRA adapters."""

    kind = "transformers"

    def __init__(self, model_dir: str | Path, base_id: str, *, dtype: str = "auto",
                 max_batch_size: int = 8, batch_wait_ms: float = 10.0, max_queue: int = 256,
                 threads: int | None = None):
        self.model_dir = Path(model_dir)
        self._base_id = base_id
        self.dtype_name = dtype
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.max_queue = max_queue
        self.threads = threads
        self.tokenizer: Any = None
        self.model: Any = None  # the base model (LoRA layers injected once an adapter is loaded)
        self.peft: Any = None  # the PeftModel wrapping `model` while any adapter is loaded
        self._adapters: dict[str, Path] = {}
        self._lock = threading.Lock()  # generation and adapter changes, one at a time
        self._executor: ThreadPoolExecutor | None = None
        self._tokenize: ThreadPoolExecutor | None = None  # prompts, off the event loop
        self._inbox: asyncio.Queue[Request] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self.device = "cpu"
        self.eos_ids: set[int] = set()
        self.max_positions: int | None = None
        self.batches = 0  # generate calls so far (tests read it to check batching)
        self._running: list[Request] = []  # the batch being generated now
        self._threads_before: int | None = None

    # -------------------------------------------------------------------------------- lifecycle
    @property
    def base_id(self) -> str:
        return self._base_id

    async def start(self) -> None:
        if self._scheduler is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-hf")
        self._tokenize = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-hf-tokenize")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        self._inbox = asyncio.Queue()
        self._scheduler = asyncio.create_task(self._schedule(), name="studio-hf-scheduler")

    def _load(self) -> None:
        import torch

        if self.threads:
            self._threads_before = torch.get_num_threads()  # process-wide: restored by stop()
            torch.set_num_threads(self.threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype_name
        if dtype == "auto":
            dtype = "bfloat16" if self.device == "cuda" else "float32"  # bf16 on CPU is slow
        self.tokenizer = load_tokenizer(self.model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_causal_lm(self.model_dir, dtype=dtype).to(self.device)
        eos = self.model.generation_config.eos_token_id
        eos_list = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(e) for e in eos_list if e is not None}
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(int(self.tokenizer.eos_token_id))
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            try:
                await self._scheduler
            except (asyncio.CancelledError, Exception):
                pass
            self._scheduler = None
        for req in list(self._running):  # the batch in progress stops at its next token
            req.cancelled = True
        while self._inbox is not None and not self._inbox.empty():
            self._inbox.get_nowait().send(ERROR, BackendError("the server is shutting down", 503,
                                                               "shutting_down"))
        if self._tokenize is not None:
            tokenize, self._tokenize = self._tokenize, None
            await asyncio.to_thread(tokenize.shutdown, True, cancel_futures=True)
        if self._executor is not None:  # waits for the cancelled batch's current token only
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)
        self.model = self.peft = None
        self._adapters.clear()
        gc.collect()
        try:
            import torch

            if self._threads_before:
                torch.set_num_threads(self._threads_before)
                self._threads_before = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    async def health(self) -> bool:
        return self.model is not None and self._scheduler is not None and not self._scheduler.done()

    # --------------------------------------------------------------------------------- adapters
    def adapters(self) -> dict[str, Path]:
        return dict(self._adapters)

    async def load_adapter(self, internal_id: str, path: Path) -> None:
        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise BackendError(f"not a PEFT adapter directory (no adapter_config.json): {path.name}",
                               400, "invalid_adapter")
        try:
            check_adapter(path)  # safetensors only: a pickle adapter can run code when loaded
        except StudioError as exc:
            raise BackendError(f"{exc.what}: only safetensors adapters are served", 400,
                               "invalid_adapter") from None
        if self._executor is None:
            raise BackendError("backend not started", 503, "not_ready")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_adapter,
                                                         internal_id, path)

    def _load_adapter(self, internal_id: str, path: Path) -> None:
        from peft import PeftModel

        with self._lock:
            if self._adapters.get(internal_id) == path:
                return
            if internal_id in self._adapters:  # same id, new directory: replace it
                self._delete_adapter(internal_id)
            try:
                if self.peft is None:
                    self.peft = PeftModel.from_pretrained(self.model, str(path), adapter_name=internal_id,
                                                          is_trainable=False)
                else:
                    self.peft.load_adapter(str(path), adapter_name=internal_id, is_trainable=False)
            except Exception as exc:
                raise BackendError(f"cannot load adapter {internal_id}: {exc.__class__.__name__}",
                                   400, "invalid_adapter") from None
            self.peft.eval()
            self._adapters[internal_id] = path

    async def unload_adapter(self, internal_id: str) -> None:
        if internal_id not in self._adapters:
            raise BackendError(f"adapter {internal_id} is not loaded", 404, "model_not_found")
        assert self._executor is not None
        await asyncio.get_running_loop().run_in_executor(self._executor, self._unload_adapter,
                                                         internal_id)

    def _unload_adapter(self, internal_id: str) -> None:
        with self._lock:
            if internal_id in self._adapters:
                self._delete_adapter(internal_id)

    def _delete_adapter(self, internal_id: str) -> None:
        del self._adapters[internal_id]
        if not self._adapters:  # the last one: take every LoRA layer out again
            self.model = self.peft.unload()
            self.peft = None
        else:
            with warnings.catch_warnings():  # "adapter X was active…": we set one per batch
                warnings.simplefilter("ignore", UserWarning)
                self.peft.delete_adapter(internal_id)
        gc.collect()

    # ------------------------------------------------------------------------------- requests
    def _params(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        if model == self._base_id:
            adapter = None
        elif model in self._adapters:
            adapter = model
        else:
            raise BackendError("model not found", 404, "model_not_found")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        temperature = body.get("temperature")
        top_p = body.get("top_p")
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        return {"adapter": adapter, "max_tokens": int(max_tokens),
                "temperature": 1.0 if temperature is None else float(temperature),
                "top_p": 1.0 if top_p is None else float(top_p),
                "stop": [s for s in stop if s], "seed": body.get("seed")}

    def _chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        flat = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, list):  # OpenAI content parts: text only
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            flat.append({"role": m.get("role"), "content": content or ""})
        try:
            text = self.tokenizer.apply_chat_template(flat, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template that rejects the roles; never echo the content
            raise BackendError(f"the chat template rejected the messages ({exc.__class__.__name__})",
                               400, "invalid_messages") from None
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _text_ids(self, prompt: Any) -> list[int]:
        """One prompt: a string (tokenized with the model's special tokens) or token ids (as given)."""
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            vocab = len(self.tokenizer)
            if any(not 0 <= t < vocab for t in prompt):
                raise BackendError(f"prompt token ids must be below the vocabulary size ({vocab})",
                                   400, "invalid_prompt")
            return list(prompt)
        if not isinstance(prompt, str):
            raise BackendError("prompt must be a string or a list of token ids", 400, "invalid_prompt")
        return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def _score(self, adapter: str | None, ids: list[int], k: int) -> Any:
        """Log-probabilities of `ids` under the base model or an adapter (worker thread)."""
        with self._lock:
            if adapter is not None and adapter not in self._adapters:
                raise BackendError("model not found", 404, "model_not_found")
            model, context = self._select(adapter)
            with context:
                return score(model, ids, k, self.device)

    def _select(self, adapter: str | None) -> tuple[Any, Any]:
        """(the model to call, the context to call it in) for an adapter or the base (None):
        the adapter made active, or every adapter switched off (under the lock)."""
        model = self.peft if self.peft is not None else self.model
        if adapter is not None:
            self.peft.set_adapter(adapter)
        context = self.peft.disable_adapter() if (adapter is None and self.peft) else nullcontext()
        return model, context

    async def _scored(self, adapter: str | None, ids: list[int], k: int) -> Any:
        if self._executor is None:
            raise BackendError("backend not started", 503, "not_ready")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._score,
                                                                adapter, ids, k)

    async def _submit(self, body: dict[str, Any], ids_of: Any) -> Request:
        if self._inbox is None or self.tokenizer is None or self._tokenize is None:
            raise BackendError("backend not started", 503, "not_ready")
        params = self._params(body)
        loop = asyncio.get_running_loop()
        prompt_ids = await loop.run_in_executor(self._tokenize, ids_of)
        if not prompt_ids:
            raise BackendError("the prompt is empty", 400, "invalid_prompt")
        if self.max_positions and len(prompt_ids) + params["max_tokens"] > self.max_positions:
            raise BackendError(f"prompt ({len(prompt_ids)} tokens) plus max_tokens "
                               f"({params['max_tokens']}) exceeds the model's context of "
                               f"{self.max_positions} tokens", 400, "context_length_exceeded")
        if self._inbox.qsize() >= self.max_queue:
            raise BackendError("too many requests queued; retry later", 429, "queue_full")
        req = Request(prompt_ids=prompt_ids, loop=loop, events=asyncio.Queue(), **params)
        await self._inbox.put(req)
        return req

    async def _events(self, req: Request) -> AsyncIterator[tuple[str, Any]]:
        try:
            while True:
                kind, payload = await req.events.get()
                if kind == ERROR:
                    raise payload
                yield kind, payload
                if kind == DONE:
                    return
        finally:
            req.cancelled = True  # a client that went away stops its row at the next token

    # ------------------------------------------------------------------------------- scheduler
    async def _schedule(self) -> None:
        assert self._inbox is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._inbox.get()
            if self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)
            pending = [first]
            while not self._inbox.empty():
                pending.append(self._inbox.get_nowait())
            groups: dict[tuple[Any, ...], list[Request]] = {}
            for req in pending:
                if not req.cancelled:
                    groups.setdefault(req.group_key, []).append(req)
            for reqs in groups.values():
                for start in range(0, len(reqs), self.max_batch_size):
                    batch = reqs[start:start + self.max_batch_size]
                    try:
                        await loop.run_in_executor(self._executor, self._generate, batch)
                    except Exception as exc:  # a bug or OOM: fail the batch, keep serving
                        error = BackendError(f"generation failed ({exc.__class__.__name__})", 500)
                        for req in batch:
                            if not req.finished:
                                req.finished = True
                                req.send(ERROR, error)

    def _generate(self, reqs: list[Request]) -> None:
        import torch

        with self._lock:
            first = reqs[0]
            if first.adapter is not None and first.adapter not in self._adapters:
                for req in reqs:
                    req.finished = True
                    req.send(ERROR, BackendError("model not found", 404, "model_not_found"))
                return
            width = max(len(r.prompt_ids) for r in reqs)
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in reqs])
            mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids)
                                 for r in reqs])
            sampling: dict[str, Any] = {"do_sample": False}
            if first.temperature > 0:
                sampling = {"do_sample": True, "temperature": first.temperature,
                            "top_p": first.top_p, "top_k": 0}
                if first.seed is not None:
                    torch.manual_seed(int(first.seed))
            model, context = self._select(first.adapter)
            self.batches += 1
            self._running = reqs
            with torch.inference_mode(), context:
                try:
                    self._generate_rows(model, ids, mask, reqs, pad, sampling)
                finally:
                    self._running = []
            for req in reqs:  # rows stopped by cancellation (client gone, shutdown) get an answer
                if not req.finished:
                    req.finished = True
                    req.send(ERROR, BackendError("the request was cancelled", 503, "cancelled"))

    def _generate_rows(self, model: Any, ids: Any, mask: Any, reqs: list[Request], pad: int,
                       sampling: dict[str, Any]) -> None:
        from transformers import StoppingCriteriaList

        model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            max_new_tokens=max(r.max_tokens for r in reqs), pad_token_id=pad,
            eos_token_id=sorted(self.eos_ids), streamer=BatchStreamer(self, reqs),
            stopping_criteria=StoppingCriteriaList([StopRows(reqs)]), **sampling)

    # Called on the worker thread for every new token of an unfinished request.
    def _advance(self, req: Request, token: int) -> None:
        req.gen_ids.append(token)
        if token in self.eos_ids:
            self._finish(req, "stop")
            return
        text = req.text + self._new_text(req)
        cut = min((i for i in (text.find(s) for s in req.stop) if i >= 0), default=-1)
        if cut >= 0:
            req.text = text[:cut]
            self._finish(req, "stop", flush=False)
            return
        req.text = text
        if len(req.gen_ids) >= req.max_tokens:
            self._finish(req, "length")
            return
        safe = len(text) - stop_holdback(text, req.stop)
        if safe > req.emitted:
            req.send(DELTA, text[req.emitted:safe])
            req.emitted = safe

    def _new_text(self, req: Request) -> str:
        """Text the newest token adds: decoding a short window, not the whole output each step.
        Empty while the window ends in an incomplete UTF-8 sequence."""
        ids, decode = req.gen_ids, self.tokenizer.decode
        before = decode(ids[req.prefix_offset:req.read_offset], skip_special_tokens=True)
        after = decode(ids[req.prefix_offset:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            req.prefix_offset, req.read_offset = req.read_offset, len(ids)
            return after[len(before):]
        return ""

    def _finish(self, req: Request, reason: str, flush: bool = True) -> None:
        if flush:  # bytes still pending in the window (an incomplete character) decode as U+FFFD
            tail = req.gen_ids[req.prefix_offset:]
            before = self.tokenizer.decode(req.gen_ids[req.prefix_offset:req.read_offset],
                                           skip_special_tokens=True)
            req.text += self.tokenizer.decode(tail, skip_special_tokens=True)[len(before):]
            req.prefix_offset = req.read_offset = len(req.gen_ids)
        req.finished = True
        req.finish_reason = reason
        if len(req.text) > req.emitted:
            req.send(DELTA, req.text[req.emitted:])
            req.emitted = len(req.text)
        req.send(DONE, {"finish_reason": reason, "usage": {
            "prompt_tokens": len(req.prompt_ids), "completion_tokens": len(req.gen_ids),
            "total_tokens": len(req.prompt_ids) + len(req.gen_ids)}})

    # ------------------------------------------------------------------------- OpenAI shapes
    async def _run(self, body: dict[str, Any], ids_of: Any) -> tuple[str, dict[str, Any], Request]:
        req = await self._submit(body, ids_of)
        parts: list[str] = []
        done: dict[str, Any] = {}
        async for kind, payload in self._events(req):
            if kind == DELTA:
                parts.append(payload)
            else:
                done = payload
        return "".join(parts), done, req

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        text, done, req = await self._run(body, lambda: self._chat_ids(body.get("messages") or []))
        logprobs = None
        if body.get("logprobs"):  # the generated tokens, less a closing end-of-turn token
            gen = req.gen_ids[:-1] if req.gen_ids and req.gen_ids[-1] in self.eos_ids else req.gen_ids
            ids = req.prompt_ids + gen
            scores = await self._scored(req.adapter, ids, int(body.get("top_logprobs") or 0))
            logprobs = chat_logprobs(self.tokenizer, ids, scores, len(req.prompt_ids),
                                     int(body.get("top_logprobs") or 0))
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": logprobs, "finish_reason": done["finish_reason"]}],
                "usage": done["usage"]}

    async def _complete_one(self, body: dict[str, Any], prompt: Any) -> tuple[dict[str, Any],
                                                                               dict[str, int]]:
        """One choice of a completion: generated text, echo, logprobs; and its usage."""
        k = body.get("logprobs")
        if int(body.get("max_tokens") or 0) == 0:  # score the prompt only (echo)
            adapter = self._params(body)["adapter"]
            if self._tokenize is None:
                raise BackendError("backend not started", 503, "not_ready")
            prompt_ids = await asyncio.get_running_loop().run_in_executor(
                self._tokenize, lambda: self._text_ids(prompt))
            if self.max_positions and len(prompt_ids) > self.max_positions:
                raise BackendError(f"prompt ({len(prompt_ids)} tokens) exceeds the model's context "
                                   f"of {self.max_positions} tokens", 400, "context_length_exceeded")
            text, gen, reason = "", [], "length"
        else:
            text, done, req = await self._run(body, lambda: self._text_ids(prompt))
            adapter, prompt_ids, gen, reason = req.adapter, req.prompt_ids, req.gen_ids, \
                done["finish_reason"]
        if body.get("echo"):
            text = (prompt if isinstance(prompt, str) else self.tokenizer.decode(prompt)) + text
        logprobs = None
        if k is not None:
            ids = prompt_ids + gen
            scores = await self._scored(adapter, ids, int(k))
            start = 0 if body.get("echo") else len(prompt_ids)
            logprobs = completion_logprobs(self.tokenizer, ids, scores, start, int(k))
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": len(gen),
                 "total_tokens": len(prompt_ids) + len(gen)}
        return {"text": text, "logprobs": logprobs, "finish_reason": reason}, usage

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) or (
            isinstance(prompt, list) and prompt and isinstance(prompt[0], int)) else list(prompt or [])
        results = await asyncio.gather(*(self._complete_one(body, p) for p in prompts))
        usage = {key: sum(u[key] for _, u in results)
                 for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": body["model"],
                "choices": [{"index": i, **choice} for i, (choice, _) in enumerate(results)],
                "usage": usage}

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        _no_stream_logprobs(body)
        req = await self._submit(body, lambda: self._chat_ids(body.get("messages") or []))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}
        yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]}
        async for kind, payload in self._events(req):
            if kind == DELTA:
                yield {**head, "choices": [{"index": 0, "delta": {"content": payload},
                                            "logprobs": None, "finish_reason": None}],
                       "usage": usage_so_far(req)}
            else:
                yield {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                            "finish_reason": payload["finish_reason"]}],
                       "usage": payload["usage"]}
                yield {**head, "choices": [], "usage": payload["usage"]}

    async def complete_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        _no_stream_logprobs(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]  # one prompt (the gateway refuses more when streaming)
        req = await self._submit(body, lambda: self._text_ids(prompt))
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": body["model"]}
        async for kind, payload in self._events(req):
            if kind == DELTA:
                yield {**head, "choices": [{"index": 0, "text": payload, "logprobs": None,
                                            "finish_reason": None}], "usage": usage_so_far(req)}
            else:
                yield {**head, "choices": [{"index": 0, "text": "", "logprobs": None,
                                            "finish_reason": payload["finish_reason"]}],
                       "usage": payload["usage"]}
                yield {**head, "choices": [], "usage": payload["usage"]}


def _no_stream_logprobs(body: dict[str, Any]) -> None:
    for key in ("logprobs", "echo"):
        if body.get(key) not in (None, False):
            raise BackendError(f"'{key}' with 'stream': true is not supported by the transformers "
                               "backend (ask without streaming)", 400, "unsupported_parameter")
