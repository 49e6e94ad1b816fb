"""Tiny random-weight models for tests and demos: a Llama chat model and a LLaVA-style VLM, built offline.

Both use a byte-level BPE tokenizer trained here on a built-in corpus, a ChatML chat template whose
assistant turns are wrapped in `{% generation %}` (so TRL's `assistant_only_loss` works), and a
GenerationConfig that stops at `<|im_end|>`. Same seed → byte-identical weights; a finished build
is reused (a marker file is written last, after an atomic rename).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

BUILDER_VERSION = 1
MARKER = ".studio-tiny.json"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", EOS_TOKEN]
IMAGE_TOKEN = "<image>"
VOCAB_SIZE = 1000
MAX_POSITIONS = 512

# The ChatML template. Content is a string or a list of parts ({"type": "text", "text": ...} and,
# for the VLM, {"type": "image"}); each assistant turn's content and its <|im_end|> are inside a
# generation block. The block sits at the top level of the loop (not in a macro) so that
# transformers' assistant tracker computes the right character offsets.
_CHAT_TEMPLATE = """\
{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is not none -%}
{%- for part in content -%}
{%- if part['type'] == 'text' -%}{{ part['text'] }}
{%- elif part['type'] == 'image' -%}@IMAGE@
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
{%- if message['role'] == 'assistant' -%}
{{- '<|im_start|>assistant\\n' -}}
{%- generation -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}
{{- '\\n' -}}
{%- else -%}
{{- '<|im_start|>' + message['role'] + '\\n' + render(message['content']) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""


def chat_template(image_token: str | None = None) -> str:
    """The ChatML template; image parts render as `image_token` (dropped when None)."""
    return _CHAT_TEMPLATE.replace("@IMAGE@", image_token or "")


# ------------------------------------------------------------------------------------------------
# Built-in corpus: deterministic, generic English plus customer-support phrasing.

_NAMES = ["Alex", "Sam", "Maria", "Chen", "Priya", "Jordan", "Lena", "Omar", "Kate", "Luis"]
_ITEMS = ["order", "package", "invoice", "account", "subscription", "refund", "password",
          "delivery", "payment", "laptop", "phone", "printer", "router", "ticket", "card"]
_PROBLEMS = ["has not arrived", "was charged twice", "is not working", "shows an error",
             "was damaged in transit", "cannot be found", "is locked", "keeps restarting",
             "was cancelled by mistake", "is missing a part", "is late again"]
_ACTIONS = ["reset your password", "check the tracking number", "issue a full refund",
            "send a replacement", "update your billing address", "escalate this to our team",
            "restart the device", "confirm your email address", "extend your warranty",
            "open a support ticket", "cancel the subscription", "verify your identity"]
_OPENERS = ["Hello,", "Hi there,", "Good morning,", "Good afternoon,", "Dear support,", "Hey,"]
_AGENT = ["I'm sorry to hear that.", "Thank you for reaching out.", "I understand how frustrating this is.",
          "Thanks for your patience.", "Happy to help with that.", "Let me look into it right away."]
_CLOSERS = ["Is there anything else I can help you with?", "Have a great day!",
            "Please let us know if the problem continues.", "We appreciate your business.",
            "You will receive an email confirmation shortly."]
_GENERIC = [
    "The quick brown fox jumps over the lazy dog.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "A good answer is short, correct and polite.",
    "The meeting starts at nine and ends before noon.",
    "Please read the instructions carefully before you begin.",
    "Numbers like 1, 2, 3, 10, 42 and 2024 appear in many documents.",
    "Questions? Answers! Lists: one; two; three. Quotes \"like this\" and (brackets).",
    "The weather today is sunny with a light breeze from the west.",
    "Learning a new skill takes practice, patience and feedback.",
    "You are a helpful customer support assistant. The user asks and the assistant answers.",
]
_ROLES = ["system", "user", "assistant"]


def tiny_corpus(n_lines: int = 400) -> list[str]:
    """A few hundred deterministic lines of generic English and customer-support dialogue."""
    rng = random.Random(20240601)
    lines = list(_GENERIC) + _ROLES * 8
    while len(lines) < n_lines:
        item, problem, action = rng.choice(_ITEMS), rng.choice(_PROBLEMS), rng.choice(_ACTIONS)
        number = rng.randint(1000, 99999)
        lines.append(f"{rng.choice(_OPENERS)} my {item} #{number} {problem}. Can you help me?")
        lines.append(f"{rng.choice(_AGENT)} I can {action} for you, {rng.choice(_NAMES)}. "
                     f"{rng.choice(_CLOSERS)}")
        lines.append(f"Q: How do I {action}? A: Open settings, choose {item}, then follow the steps.")
        lines.append(rng.choice(_GENERIC))
    return lines[:n_lines]


# ------------------------------------------------------------------------------------------------
# Tokenizer


def build_tiny_tokenizer(extra_special: list[str] | None = None) -> Any:
    """Train a byte-level BPE (~1000 tokens) on the built-in corpus; wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    image = bool(extra_special and IMAGE_TOKEN in extra_special)
    kwargs: dict[str, Any] = {}
    if extra_special:
        kwargs["extra_special_tokens"] = list(extra_special)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        model_max_length=MAX_POSITIONS,
        padding_side="right",
        chat_template=chat_template(IMAGE_TOKEN if image else None),
        **kwargs,
    )
    return wrapped


# ------------------------------------------------------------------------------------------------
# Model configs


def tiny_llama_config(vocab_size: int, eos_id: int, pad_id: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32",
    )


def _generation_config(eos_id: int, pad_id: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None,
                            do_sample=False, max_new_tokens=64)


# ------------------------------------------------------------------------------------------------
# Build helpers


def _is_built(out_dir: Path, marker: dict[str, Any]) -> bool:
    path = out_dir / MARKER
    try:
        return json.loads(path.read_text()) == marker
    except (OSError, ValueError):
        return False


def _build_atomically(out_dir: Path, marker: dict[str, Any], build: Any) -> Path:
    """Run build(tmp_dir) in a temporary sibling, then swap it in; the marker is written last."""
    out_dir = Path(out_dir)
    if _is_built(out_dir, marker):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        build(tmp)
        (tmp / MARKER).write_text(json.dumps(marker, sort_keys=True))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def build_tiny_llama(out_dir: Path, seed: int = 0) -> Path:
    """A tiny Llama chat model (random weights from `seed`) with the tiny tokenizer, saved to out_dir."""
    marker = {"kind": "tiny-llama", "seed": seed, "builder_version": BUILDER_VERSION}

    def build(tmp: Path) -> None:
        import torch
        from transformers import LlamaForCausalLM

        tokenizer = build_tiny_tokenizer()
        eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
        config = tiny_llama_config(len(tokenizer), eos_id, pad_id)
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.generation_config = _generation_config(eos_id, pad_id)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _build_atomically(Path(out_dir), marker, build)


def build_tiny_llava(out_dir: Path, seed: int = 0) -> Path:
    """A tiny LLaVA-style VLM (CLIP vision 32px/8px patches + tiny Llama) with its processor."""
    marker = {"kind": "tiny-llava", "seed": seed, "builder_version": BUILDER_VERSION}

    def build(tmp: Path) -> None:
        import torch
        from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        tokenizer = build_tiny_tokenizer(extra_special=[IMAGE_TOKEN])
        eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        vision = CLIPVisionConfig(
            image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
        )
        config = LlavaConfig(
            vision_config=vision,
            text_config=tiny_llama_config(len(tokenizer), eos_id, pad_id),
            image_token_index=image_id,
            projector_hidden_act="gelu",
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            tie_word_embeddings=True,
        )
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
        model.generation_config = _generation_config(eos_id, pad_id)
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        )
        processor = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=8,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            image_token=IMAGE_TOKEN,
            chat_template=chat_template(IMAGE_TOKEN),
        )
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)

    return _build_atomically(Path(out_dir), marker, build)
