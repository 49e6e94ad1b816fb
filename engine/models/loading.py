"""Local-only loading of stored models: tokenizer, causal LM, optional PEFT adapter (merged), model kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import StudioError
from engine.privacy.policy import load_policy

# config.json model_type values of image-text-to-text models (a `vision_config` also counts)
VLM_MODEL_TYPES = frozenset({
    "aya_vision", "blip-2", "chameleon", "cohere2_vision", "deepseek_vl", "deepseek_vl_hybrid",
    "emu3", "florence2", "fuyu", "gemma3", "gemma3n", "glm4v", "got_ocr2", "idefics", "idefics2",
    "idefics3", "instructblip", "internvl", "janus", "kosmos-2", "lfm2_vl", "llama4", "llava",
    "llava_next", "llava_next_video", "llava_onevision", "mistral3", "mllama", "ovis2", "paligemma",
    "perception_lm", "phi4_multimodal", "pixtral", "qwen2_5_vl", "qwen2_vl", "qwen3_vl",
    "qwen3_vl_moe", "smolvlm",
})


def torch_dtype(dtype: Any) -> Any:
    """'float32' / 'bfloat16' / 'float16' / 'auto' / a torch.dtype → what from_pretrained expects."""
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype or "auto"
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def remote_code_allowed(model_dir: str | Path) -> bool:
    """trust_remote_code only for store models listed in <workspace>/privacy.yaml trust_remote_code."""
    p = Path(model_dir).resolve()
    if p.parent.name != "models":
        return False
    return p.name in load_policy(p.parent.parent).trust_remote_code


def safe_load_kwargs(model_dir: str | Path) -> dict[str, Any]:
    """from_pretrained kwargs that load safetensors only (a .bin-only model is refused)."""
    d = Path(model_dir)
    if d.is_dir() and not any(d.glob("*.safetensors")):
        pickles = sorted(p.name for p in d.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise StudioError(
            f"{d.name}: no safetensors weights" + (f" (found {pickles[0]}: pickle, refused)" if pickles else ""),
            where=str(d), hint="only safetensors weights are loaded; convert the model on a trusted "
                               "machine (save_pretrained(safe_serialization=True)) and import it")
    return {"use_safetensors": True, "trust_remote_code": remote_code_allowed(d)}


def check_adapter(adapter_dir: str | Path) -> None:
    """A PEFT adapter must be safetensors (adapter_model.safetensors); pickle adapters are refused."""
    d = Path(adapter_dir)
    if not (d / "adapter_model.safetensors").is_file():
        raise StudioError(f"{d.name}: no adapter_model.safetensors", where=str(d),
                          hint="only safetensors adapters are loaded (pickle .bin adapters can run code)")


def load_tokenizer(model_dir: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True,
                                         trust_remote_code=remote_code_allowed(model_dir))


def load_causal_lm(model_dir: str | Path, adapter_dir: str | Path | None = None, *,
                   dtype: Any = "float32", merge: bool = True) -> Any:
    """The base model from model_dir (eval mode); with adapter_dir, a PEFT model, merged when merge=True."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch_dtype(dtype), local_files_only=True, **safe_load_kwargs(model_dir))
    if adapter_dir is not None:
        from peft import PeftModel

        check_adapter(adapter_dir)

        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        if merge:
            model = model.merge_and_unload()
    model.eval()
    return model


def is_vlm_model(model_dir: str | Path) -> bool:
    """True when the model directory's config.json describes an image-text-to-text model."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict):
        return False
    return config.get("model_type") in VLM_MODEL_TYPES or isinstance(config.get("vision_config"), dict)
