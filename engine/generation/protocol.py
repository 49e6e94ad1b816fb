"""What every generation backend offers (batched chat generation, single-token choice scores).

`GenerationBackend` is the interface that eval, the graders' model judges, GRPO rewards and the
refine's LLM stages program against; engine/generation/transformers_backend.py (in-process) and
engine/generation/vllm_generation.py (a vLLM server) implement it, and
engine/generation/factory.py picks one for a config.
"""

from __future__ import annotations

from typing import Any, Protocol

from rich.progress import Progress


class GenerationBackend(Protocol):
    def generate(self, prompts: list[list[dict[str, str]]], max_new_tokens: int,
                 batch_size: int, progress: Progress | None = None,
                 label: str = "generate") -> list[str]: ...

    def describe(self) -> dict[str, Any]:
        """What besides the weights decides the outputs (backend, versions, device, dtype, chat
        template hash); part of the generation cache key. A backend without it is not cached."""
        ...

    def choice_logprobs(self, prompts: list[list[dict[str, str]]], choices: list[str],
                        batch_size: int = 8) -> list[list[float]]: ...


def choice_token_ids(tokenizer: Any, choices: list[str]) -> list[int]:
    """The token id of each choice; ValueError when a choice is not exactly one token."""
    ids = []
    for choice in choices:
        toks = tokenizer.encode(choice, add_special_tokens=False)
        if len(toks) != 1:
            raise ValueError(f"choice {choice!r} is {len(toks)} tokens for this tokenizer, "
                             "need exactly one")
        ids.append(toks[0])
    return ids


def close_backend(backend: Any) -> None:
    """Stop what a backend started (the vLLM server); nothing for in-process transformers."""
    close = getattr(backend, "close", None)
    if callable(close):
        close()
