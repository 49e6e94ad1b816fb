"""Local-only loading of stored models: tokenizer, causal LM, optional PEFT adapter (merged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def torch_dtype(dtype: Any) -> Any:
    """'float32' / 'bfloat16' / 'float16' / 'auto' / a torch.dtype → what from_pretrained expects."""
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype or "auto"
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def load_tokenizer(model_dir: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


def load_causal_lm(model_dir: str | Path, adapter_dir: str | Path | None = None, *,
                   dtype: Any = "float32", merge: bool = True) -> Any:
    """The base model from model_dir (eval mode); with adapter_dir, a PEFT model, merged when merge=True."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch_dtype(dtype), local_files_only=True)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        if merge:
            model = model.merge_and_unload()
    model.eval()
    return model
