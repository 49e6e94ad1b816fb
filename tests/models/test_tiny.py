"""Tests for the tiny-model factories: tokenizer, ChatML + generation marks, determinism, LLaVA."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.hashing import sha256_file

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi, my order is late."},
    {"role": "assistant", "content": "Sorry! I can check the tracking number."},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": "You're welcome."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from engine.models.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def test_tiny_llama_files_and_config(tiny_model_dir: Path) -> None:
    import json

    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    assert config["num_attention_heads"] == 4 and config["num_key_value_heads"] == 2
    assert config["tie_word_embeddings"] is True
    assert "rope_parameters" in config


def test_tokenizer_special_tokens(tokenizer) -> None:
    assert 900 <= len(tokenizer) <= 1100
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    ids = tokenizer("Hello, my order #1234 has not arrived.")["input_ids"]
    assert tokenizer.decode(ids) == "Hello, my order #1234 has not arrived."
    # special tokens are single ids
    for tok in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tokenizer.encode(tok, add_special_tokens=False)) == 1


def test_chat_template_renders_chatml(tokenizer) -> None:
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi, my order is late.<|im_end|>\n"
        "<|im_start|>assistant\nSorry! I can check the tracking number.<|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n"
        "<|im_start|>assistant\nYou're welcome.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nHi, my order is late.<|im_end|>\n<|im_start|>assistant\n")
    assert "{% generation %}" in tokenizer.chat_template or "{%- generation -%}" in tokenizer.chat_template
    assert "endgeneration" in tokenizer.chat_template
    # list-of-parts content renders like a string
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi, my order is late."}]}]
    assert tokenizer.apply_chat_template(parts, tokenize=False) == tokenizer.apply_chat_template(
        MESSAGES[1:2], tokenize=False)


def test_assistant_mask_marks_exactly_assistant_content_and_eos(tokenizer) -> None:
    out = tokenizer.apply_chat_template(MESSAGES, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    masked = [i for i, m in zip(ids, mask) if m]
    expected = (tokenizer.encode("Sorry! I can check the tracking number.<|im_end|>", add_special_tokens=False)
                + tokenizer.encode("You're welcome.<|im_end|>", add_special_tokens=False))
    assert masked == expected
    # the masked spans are contiguous runs that each end with <|im_end|>
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    runs, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    assert len(runs) == 2 and all(r[-1] == eos for r in runs)


def test_generation_config_and_generate(tiny_model_dir: Path, tokenizer) -> None:
    import torch

    from engine.models.loading import load_causal_lm

    model = load_causal_lm(tiny_model_dir)
    gen = model.generation_config
    assert gen.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert gen.pad_token_id == tokenizer.pad_token_id
    assert gen.do_sample is False
    enc = tokenizer.apply_chat_template(MESSAGES[:2], add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, min_new_tokens=4)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4


def test_same_seed_same_weights_and_reuse(tmp_path: Path, tiny_model_dir: Path) -> None:
    from engine.models.tiny import build_tiny_llama

    a = build_tiny_llama(tmp_path / "a", seed=0)
    b = build_tiny_llama(tmp_path / "b", seed=0)
    c = build_tiny_llama(tmp_path / "c", seed=1)
    weights = lambda d: sha256_file(d / "model.safetensors")  # noqa: E731
    assert weights(a) == weights(b) == weights(tiny_model_dir)
    assert sha256_file(a / "tokenizer.json") == sha256_file(b / "tokenizer.json")
    assert weights(c) != weights(a)
    # idempotent: a finished build is reused, not rebuilt
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_llama(tmp_path / "a", seed=0) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime
    # a different seed in the same directory rebuilds it
    build_tiny_llama(tmp_path / "a", seed=1)
    assert weights(a) == weights(c)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_tiny_llava_processor_and_forward(tiny_vlm_dir: Path) -> None:
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration, ProcessorMixin

    processor = AutoProcessor.from_pretrained(str(tiny_vlm_dir), local_files_only=True)
    assert isinstance(processor, ProcessorMixin), type(processor)  # a real processor, not a tokenizer
    assert type(processor).__name__ == "LlavaProcessor"
    assert processor.image_processor is not None
    model = LlavaForConditionalGeneration.from_pretrained(str(tiny_vlm_dir), local_files_only=True)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text.startswith("<|im_start|>user\n<image>What is this?<|im_end|>\n")
    image = Image.new("RGB", (48, 40), (200, 30, 30))
    enc = processor(images=[image], text=[text], return_tensors="pt")
    assert enc["pixel_values"].shape == (1, 3, 32, 32)
    image_id = model.config.image_token_index
    assert int((enc["input_ids"] == image_id).sum()) == 16  # (32/8)^2 patches, CLS dropped
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], len(processor.tokenizer))
    assert logits.shape[-1] == model.config.text_config.vocab_size
    assert torch.isfinite(logits).all()
