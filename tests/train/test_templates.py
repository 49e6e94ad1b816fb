"""Training template plan: marked ChatML proven identical to the serving template, or fallback."""

from __future__ import annotations

from pathlib import Path

from engine.train.templates import chatml_marked_template, plan_template, renders_identically

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tok(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


def test_model_template_with_generation_marks_is_used_as_is(tiny_model_dir: Path) -> None:
    tok = _tok(tiny_model_dir)
    plan = plan_template(tok)
    assert plan.mode == "assistant_only" and plan.template == tok.chat_template


def test_plain_chatml_gets_an_identical_marked_template(tiny_model_dir: Path) -> None:
    tok = _tok(tiny_model_dir)
    tok.chat_template = SMOLLM2_TEMPLATE
    plan = plan_template(tok)
    assert plan.mode == "assistant_only"
    assert "{% generation %}" in plan.template
    assert renders_identically(tok, SMOLLM2_TEMPLATE, plan.template)
    # the default system prompt is reproduced when a conversation has none
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    text = tok.apply_chat_template(conv, chat_template=plan.template, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    # the loss mask covers the reply and its end-of-turn token, nothing else
    enc = tok.apply_chat_template(conv, chat_template=plan.template, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(masked) == "yo<|im_end|>"


def test_unknown_template_falls_back_to_last_turn(tiny_model_dir: Path) -> None:
    tok = _tok(tiny_model_dir)
    tok.chat_template = ("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}### assistant: {% endif %}")
    assert chatml_marked_template(tok) is None
    plan = plan_template(tok)
    assert plan.mode == "last_turn" and plan.template is None


def test_chatml_variant_that_differs_is_not_accepted(tiny_model_dir: Path) -> None:
    tok = _tok(tiny_model_dir)
    # ChatML-looking, but adds a trailing marker the marked template would not reproduce
    tok.chat_template = SMOLLM2_TEMPLATE.replace("'<|im_end|>' + '\\n'", "'<|im_end|>' + '\\n\\n'")
    assert plan_template(tok).mode == "last_turn"
