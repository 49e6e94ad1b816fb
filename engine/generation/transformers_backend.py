"""In-process batched generation with transformers (CPU or one GPU): the default generation backend.

Prompts are sorted by length so that each batch pads little, then restored to input order.
`choice_logprobs` scores single-token answers (e.g. "1".."5") as the next token after a chat
prompt, for judges that must always return a parseable score. Implements
engine/generation/protocol.py's `GenerationBackend`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.progress import Progress

from engine.generation.protocol import choice_token_ids
from engine.hashing import sha256_text
from engine.models.loading import load_causal_lm, load_tokenizer


class TransformersBackend:
    """In-process generation with transformers; a LoRA adapter is merged into the base.

    The weights load on first use of `model`, so a fully cached eval never loads them.
    """

    def __init__(self, model_dir: Path, adapter_dir: Path | None = None, threads: int | None = None):
        import torch

        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.model_dir, self.adapter_dir = Path(model_dir), adapter_dir
        self.tokenizer = load_tokenizer(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = "bfloat16" if self.device == "cuda" else "float32"  # bf16 on CPU is ~4x slower
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_causal_lm(self.model_dir, self.adapter_dir, dtype=self.dtype,
                                         merge=True).to(self.device)
            self._model.eval()
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = value

    def describe(self) -> dict[str, Any]:
        import torch
        import transformers

        template = self.tokenizer.chat_template
        return {"backend": "transformers", "transformers": transformers.__version__,
                "torch": torch.__version__, "device": self.device, "dtype": self.dtype,
                "chat_template_sha256": sha256_text(template) if isinstance(template, str) else None,
                "padding_side": self.tokenizer.padding_side}

    def generate(self, prompts: list[list[dict[str, str]]], max_new_tokens: int,
                 batch_size: int, progress: Progress | None = None,
                 label: str = "generate", *, temperature: float = 0.0, seed: int = 0) -> list[str]:
        """Outputs in input order. Greedy when temperature is 0; otherwise sampled, seeded once
        per call (a sampled output then depends on the whole prompt list and batch size)."""
        import torch

        tok = self.tokenizer
        sample = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 \
            else {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(seed)
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        outputs: list[str] = [""] * len(texts)
        task = progress.add_task(label, total=len(texts)) if progress is not None else None
        eos = self.model.generation_config.eos_token_id
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**enc, max_new_tokens=max_new_tokens, **sample,
                                          pad_token_id=tok.pad_token_id, eos_token_id=eos)
            new = out[:, enc["input_ids"].shape[1]:]
            for i, row in zip(idx, new):
                outputs[i] = tok.decode(row, skip_special_tokens=True).strip()
            if progress is not None and task is not None:
                progress.advance(task, len(idx))
        return outputs

    def choice_token_ids(self, choices: list[str]) -> list[int]:
        """The token id of each choice; ValueError when a choice is not exactly one token."""
        return choice_token_ids(self.tokenizer, choices)

    def choice_logprobs(self, prompts: list[list[dict[str, str]]], choices: list[str],
                        batch_size: int = 8) -> list[list[float]]:
        """log P(choice | chat prompt + generation prompt) for each single-token choice.

        One forward pass per batch; left padding with position ids from the attention mask, so
        a prompt scores the same in any batch (up to float rounding).
        """
        import torch

        tok = self.tokenizer
        ids = torch.tensor(self.choice_token_ids(choices))
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(self.device)
            mask = enc["attention_mask"]
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(input_ids=enc["input_ids"], attention_mask=mask,
                                    position_ids=positions, use_cache=False,
                                    logits_to_keep=1).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)[:, ids.to(logits.device)].cpu()
            for i, row in zip(idx, logprobs.tolist()):
                out[i] = row
        return out
