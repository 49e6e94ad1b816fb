"""The template and mask gate catches what would silently ruin a fine-tune."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import StudioError
from engine.train.mask_gate import check_gate, mask_report

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "Queue: BILLING | Priority: P2"},
        {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "ok"}]
MARKED = "{%- generation -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}"


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


def test_good_template_passes_with_per_role_counts(tok) -> None:
    report = mask_report(tok, tok.chat_template, tok.chat_template, [CONV])
    check_gate(report)
    assert report["assistant_replies"] == report["replies_with_end_of_turn_trained"] == 2
    assert report["roles"]["user"]["trained"] == 0 and report["roles"]["system"]["trained"] == 0
    # replies (through <|im_end|>) are fully trained; "<|im_start|>assistant\n" and the newline after
    # <|im_end|> are template tokens and carry no loss
    assert report["roles"]["assistant"]["loss_share"] == 1.0
    assert report["roles"]["template"]["tokens"] > 0 and report["roles"]["template"]["trained"] == 0


def test_template_without_end_of_turn_in_the_loss_is_caught(tok) -> None:
    assert MARKED in tok.chat_template
    bad = tok.chat_template.replace(
        MARKED, "{%- generation -%}{{- render(message['content']) -}}{%- endgeneration -%}{{- '<|im_end|>' -}}")
    report = mask_report(tok, bad, tok.chat_template, [CONV])
    assert report["templates_identical"]  # same text: only the mask differs
    with pytest.raises(StudioError, match="end-of-turn token '<\\|im_end\\|>' is not trained in 2 of 2"):
        check_gate(report)


def test_training_template_that_renders_differently_is_caught(tok) -> None:
    other = tok.chat_template.replace("'<|im_end|>\\n'", "'<|im_end|>\\n\\n'")
    assert other != tok.chat_template
    with pytest.raises(StudioError, match="differently from the serving template"):
        check_gate(mask_report(tok, other, tok.chat_template, [CONV]))


def test_loss_on_user_tokens_is_caught(tok) -> None:
    leaky = tok.chat_template.replace(
        "{{- '<|im_start|>' + message['role'] + '\\n' + render(message['content']) + '<|im_end|>\\n' -}}",
        "{%- generation -%}{{- '<|im_start|>' + message['role'] + '\\n' + render(message['content']) + '<|im_end|>\\n' -}}{%- endgeneration -%}")
    assert leaky != tok.chat_template
    with pytest.raises(StudioError, match="non-assistant tokens"):
        check_gate(mask_report(tok, leaky, leaky, [CONV]))
