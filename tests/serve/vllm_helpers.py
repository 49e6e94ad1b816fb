"""Shared set-up for the vLLM tests: a vLLM-servable tiny model, LoRA adapters, an event-loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def build_vllm_tiny(out_dir: Path, seed: int = 0) -> Path:
    """engine.models.tiny's chat model with 2 heads of size 32 (vLLM's CPU kernels need >= 32).

    Same tokenizer, ChatML template and generation config as build_tiny_llama; a larger init
    spread makes greedy choices clear-cut, so vLLM and transformers agree token for token.
    """
    from engine.models import tiny

    marker = {"kind": "tiny-llama-vllm", "seed": seed, "builder_version": tiny.BUILDER_VERSION}

    def build(tmp: Path) -> None:
        import torch
        from transformers import LlamaForCausalLM

        tokenizer = tiny.build_tiny_tokenizer()
        eos_id = tokenizer.convert_tokens_to_ids(tiny.EOS_TOKEN)
        pad_id = tokenizer.convert_tokens_to_ids(tiny.PAD_TOKEN)
        config = tiny.tiny_llama_config(len(tokenizer), eos_id, pad_id)
        config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 32
        config.initializer_range = 0.1
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.generation_config = tiny._generation_config(eos_id, pad_id)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return tiny._build_atomically(Path(out_dir), marker, build)


def make_lora(model_dir: Path, out_dir: Path, seed: int, rank: int = 8) -> Path:
    """A PEFT LoRA adapter on every linear layer with random NON-zero B (so it changes outputs)."""
    from tests.helpers import random_lora

    return random_lora(model_dir, out_dir, seed, rank=rank, alpha=2 * rank, targets="all-linear",
                       scale=0.3)


class LoopThread:
    """An asyncio loop in a daemon thread, so sync tests can share one async backend."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def transformers_greedy(model_dir: Path, adapter_dir: Path | None, messages: list[dict[str, str]],
                        max_new_tokens: int) -> list[int]:
    """The new token ids of transformers' greedy generation (fp32, adapter unmerged)."""
    import torch

    from engine.models.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, adapter_dir, dtype="float32", merge=False)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()
