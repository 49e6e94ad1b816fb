"""Chat families: how to mark each family's official template for assistant-only loss.

A family rule is a surgical edit of the official serving template: each (old, new) pair wraps one
assistant branch in `{% generation %}…{% endgeneration %}` so that the block covers the reply *and*
its end-of-turn token (what the model generates when served, so it learns to stop) and nothing
else (not the role header, not the newline after the end-of-turn token). Edits are applied to the
model's own template text; templates.py then proves on probes, and mask_gate.py on the training
data, that the edited template renders byte-identical text and trains only the replies.

TRL ships training templates for some families (trl/chat_templates/*_training.jinja); they are
tried first (templates.py), but several also train template glue (the newline after
`<end_of_turn>` / `<|end|>` / `<|im_end|>`, Phi-3's closing eos, the newline of Qwen2.5's
`<|im_start|>assistant\\n` cue) or, for Qwen3, render earlier replies differently from the served
template; the gate refuses those and the rule below is used instead.
Assistant turns with tool calls are left unmarked (not trained).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

_GEN, _END = "{%- generation %}", "{%- endgeneration %}"


@dataclass(frozen=True)
class Family:
    """A family name (also a `train.chat_template` value), the checkpoints it covers, its edits."""

    name: str
    covers: str
    edits: tuple[tuple[str, str], ...]


def _llama3_1_edit() -> tuple[str, str]:
    line = ("{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
            "+ message['content'] | trim + '<|eot_id|>' }}")
    return line, ("{%- if message['role'] == 'assistant' %}"
                  "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
                  f"{_GEN}{{{{- message['content'] | trim + '<|eot_id|>' }}}}{_END}"
                  f"{{%- else %}}{line}{{%- endif %}}")


_QWEN2_5 = (
    "{%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}",
    "{%- if message.role == \"assistant\" and not message.tool_calls %}"
    "{{- '<|im_start|>assistant\\n' }}"
    f"{_GEN}{{{{- message.content + '<|im_end|>' }}}}{_END}{{{{- '\\n' }}}}"
    "{%- elif (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}",
)

# Qwen3: the header moves in front of one generation block that holds the (conditional) think
# block, the content, any tool calls and <|im_end|>; the newline after it stays outside.
_QWEN3_HEAD = """{%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}"""
_QWEN3_HEAD_NEW = (
    "{{- '<|im_start|>' + message.role + '\\n' }}" + _GEN +
    "{%- if loop.index0 > ns.last_query_index and (loop.last or (not loop.last and reasoning_content)) %}"
    "{{- '<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- content }}{%- endif %}")
_QWEN3_TAIL = """{{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}"""
_QWEN3_TAIL_NEW = ("{{- '<|im_end|>' }}" + _END + "{{- '\\n' }}\n"
                   "    {%- elif message.role == \"tool\" %}")

# Gemma 2 (and 1): one output line for every role; split off the model's reply.
_GEMMA2 = ("{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}",
           "{{ '<start_of_turn>' + role + '\n' }}{% if role == 'model' %}" + _GEN +
           "{{ message['content'] | trim + '<end_of_turn>' }}" + _END +
           "{% else %}{{ message['content'] | trim + '<end_of_turn>' }}{% endif %}{{ '\n' }}")

# Gemma 3: the content (string or parts) is captured, then written inside or outside the block.
_GEMMA3_HEAD = ("{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}",
                "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
                "{%- set body -%}")
_GEMMA3_TAIL = ("{{ '<end_of_turn>\n' }}\n{%- endfor -%}",
                "{%- endset -%}{%- if role == 'model' -%}" + _GEN +
                "{{ body + '<end_of_turn>' }}" + _END +
                "{%- else -%}{{ body + '<end_of_turn>' }}{%- endif -%}{{ '\n' }}\n{%- endfor -%}")

_PHI3 = ("{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}",
         "{{'<|assistant|>\n'}}" + _GEN + "{{message['content'] + '<|end|>'}}" + _END + "{{'\n'}}")
_PHI4 = ("{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}",
         "{{'<|im_start|>assistant<|im_sep|>'}}" + _GEN + "{{message['content'] + '<|im_end|>'}}" + _END)


def _wrap(expr: str) -> tuple[str, str]:
    """Wrap one `{{- … }}` output statement (reply + eos) in a generation block."""
    return expr, _GEN + expr + _END


FAMILIES: tuple[Family, ...] = (
    Family("llama3_1", "Llama 3.1, 3.2, 3.3 Instruct", (_llama3_1_edit(),)),
    Family("qwen2_5", "Qwen2.5 Instruct", (_QWEN2_5,)),
    Family("qwen3", "Qwen3 (hybrid thinking)", ((_QWEN3_HEAD, _QWEN3_HEAD_NEW), (_QWEN3_TAIL, _QWEN3_TAIL_NEW))),
    Family("mistral", "Mistral 7B Instruct v0.3", (_wrap('{{- " " + message["content"]|trim + eos_token}}'),)),
    Family("mistral_nemo", "Mistral Nemo Instruct 2407", (_wrap('{{- message["content"] + eos_token}}'),)),
    Family("mistral_small", "Mistral Small 3.x Instruct", (_wrap("{{- message['content'] + eos_token }}"),
                                                           _wrap("{{- message['content'][0]['text'] + eos_token }}"))),
    Family("gemma2", "Gemma 2 (and Gemma 1) it", (_GEMMA2,)),
    Family("gemma3", "Gemma 3 it", (_GEMMA3_HEAD, _GEMMA3_TAIL)),
    Family("phi3", "Phi-3 and Phi-3.5 Instruct", (_PHI3,)),
    Family("phi4", "Phi-4", (_PHI4,)),
)

# TRL's training templates, by the official template TRL matches exactly, and the family each is.
TRL_FAMILIES: dict[str, str] = {"llama3": "llama3", "qwen2_5": "qwen2_5", "qwen3": "qwen3",
                                "gemma": "gemma2", "gemma3": "gemma3", "phi3": "phi3", "phi3_5": "phi3"}

# Every family name `train.chat_template` accepts ('chatml': the marked ChatML of templates.py).
FAMILY_NAMES: tuple[str, ...] = ("llama3", *(f.name for f in FAMILIES), "chatml")


def apply_family(template: str, family: Family) -> str | None:
    """The family's marked version of `template`, or None when an edit's text is not in it."""
    out = template
    for old, new in family.edits:
        if out.count(old) != 1:
            return None
        out = out.replace(old, new)
    return out


def trl_training_template(tokenizer: Any) -> tuple[str, str] | None:
    """(family, TRL's training template) when TRL's get_training_chat_template knows the
    tokenizer's template (an exact-text match against the official templates TRL ships)."""
    import trl  # heavy (torch, transformers): imported when a plan is made, not at CLI start-up
    from trl.chat_template_utils import get_training_chat_template

    try:
        training = get_training_chat_template(tokenizer)
    except (ValueError, TypeError):  # TRL has no training version of this template
        return None
    if training is None:  # already marked: templates.py uses the model's own template
        return None
    folder = Path(trl.__file__).parent / "chat_templates"
    for stem, family in TRL_FAMILIES.items():
        official = folder / f"{stem}.jinja"
        if official.is_file() and official.read_text(encoding="utf-8") == tokenizer.chat_template:
            return family, training
    return "trl", training


def family_candidates(tokenizer: Any, only: str | None = None) -> list[tuple[str, str, str]]:
    """(family, source, marked template) candidates for a model's unmarked template, in the order
    they are tried: TRL's training template, then this module's edit."""
    template = tokenizer.chat_template
    out: list[tuple[str, str, str]] = []
    trl_match = trl_training_template(tokenizer)
    if trl_match and only in (None, trl_match[0]):
        out.append((trl_match[0], "TRL training template", trl_match[1]))
    for family in FAMILIES:
        if only in (None, family.name):
            marked = apply_family(template, family)
            if marked is not None:
                out.append((family.name, "studio family rule", marked))
    return out
