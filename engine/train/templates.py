"""Training chat templates: make assistant-only loss possible without changing what is served.

TRL's `assistant_only_loss` needs `{% generation %}` markers in the chat template. A model whose
own template has them is used as is. For ChatML models (SmolLM2, Qwen, …) we build a marked
ChatML template that reproduces the model's own rendering (including its default system prompt)
and prove, on probe conversations, that both templates render byte-identical text; the markers
cover each assistant reply *and* its end-of-turn token, so the model learns to stop.
Models whose template we cannot reproduce fall back to prompt/completion training (loss on the
final assistant turn only), which TRL renders through the model's own template.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_PROBES: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi! How can I help?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ping"},
     {"role": "assistant", "content": "Pong"}, {"role": "user", "content": "Again"},
     {"role": "assistant", "content": "Pong\nPong"}],
]

_CHATML_MARKED = (
    "{%- for message in messages -%}"
    "{%- if loop.first and messages[0]['role'] != 'system' -%}{{ DEFAULT_SYSTEM }}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class TemplatePlan:
    """How a model will be trained: `mode` is 'assistant_only' or 'last_turn'."""

    mode: str
    template: str | None
    reason: str


def _render(tokenizer: Any, template: str, messages: list[dict[str, str]], gen: bool) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=gen)


def renders_identically(tokenizer: Any, a: str, b: str, extra: list[list[dict[str, str]]] = ()) -> bool:
    """True when templates a and b render the same text for every probe (with and without
    a generation prompt on the prompt part)."""
    for conv in [*_PROBES, *extra]:
        if _render(tokenizer, a, conv, False) != _render(tokenizer, b, conv, False):
            return False
        if _render(tokenizer, a, conv[:-1], True) != _render(tokenizer, b, conv[:-1], True):
            return False
    return True


def chatml_marked_template(tokenizer: Any) -> str | None:
    """A marked ChatML template equal to the tokenizer's own, or None when it is not ChatML."""
    own = tokenizer.chat_template
    if not isinstance(own, str) or "<|im_start|>" not in own:
        return None
    probe = _render(tokenizer, own, [{"role": "user", "content": "x"}], False)
    default_system = ""
    if probe.startswith("<|im_start|>system\n"):
        default_system = probe[: probe.index("<|im_end|>\n") + len("<|im_end|>\n")]
    literal = json.dumps(default_system)  # a valid Jinja string literal
    return _CHATML_MARKED.replace("DEFAULT_SYSTEM", literal if default_system else "''")


def plan_template(tokenizer: Any, samples: list[list[dict[str, str]]] = ()) -> TemplatePlan:
    """Decide how to get assistant-only loss while training on exactly the serving template."""
    own = tokenizer.chat_template
    if not isinstance(own, str):
        return TemplatePlan("last_turn", None, "the model has no chat template")
    if _GENERATION_TAG.search(own):
        return TemplatePlan("assistant_only", own, "the model's template marks assistant turns")
    marked = chatml_marked_template(tokenizer)
    if marked and renders_identically(tokenizer, own, marked, list(samples)[:3]):
        return TemplatePlan("assistant_only", marked,
                            "ChatML template with generation marks, proven identical to the model's")
    return TemplatePlan("last_turn", None,
                        "the model's template has no generation marks and is not plain ChatML; "
                        "training on the final assistant turn of each conversation")
