"""Training chat templates: make assistant-only loss possible without changing what is served.

TRL's `assistant_only_loss` needs `{% generation %}` markers in the chat template. A model whose
own template has them is used as is. Otherwise candidates are tried in order: TRL's training
template for the model's official template, this project's family rule (family_templates.py:
Llama 3.x, Qwen2.5, Qwen3, Mistral, Gemma 2/3, Phi-3/3.5/4), and a marked ChatML template that
reproduces the model's own rendering (SmolLM2 and other ChatML models). A candidate is taken only
when it renders byte-identical text on probe conversations and the mask gate (mask_gate.py) passes
on them: loss on each reply and its end-of-turn token, nothing else.
`train.chat_template` pins a family or gives a marked .jinja file; it is a training template only
(the serving template never changes) and is refused when it does not render like the served one.
Models whose template we cannot reproduce fall back to prompt/completion training (loss on the
final assistant turn only), which TRL renders through the model's own template.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engine.errors import StudioError
from engine.train.family_templates import FAMILY_NAMES, family_candidates
from engine.train.mask_gate import check_gate, mask_report, render_or_none

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
    family: str | None = None


_render = render_or_none  # None when the template refuses the conversation


def renders_identically(tokenizer: Any, a: str, b: str, extra: list[list[dict[str, str]]] = ()) -> bool:
    """True when templates a and b render the same text for every probe (with and without
    a generation prompt on the prompt part); a conversation both refuse counts as the same."""
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
    probe = _render(tokenizer, own, [{"role": "user", "content": "x"}], False) or ""
    default_system = ""
    if probe.startswith("<|im_start|>system\n"):
        default_system = probe[: probe.index("<|im_end|>\n") + len("<|im_end|>\n")]
    literal = json.dumps(default_system)  # a valid Jinja string literal
    return _CHATML_MARKED.replace("DEFAULT_SYSTEM", literal if default_system else "''")


def _passes_gate(tokenizer: Any, own: str, candidate: str,
                 samples: list[list[dict[str, str]]]) -> bool:
    """The mask gate on the probes without a system message (a system prompt's placement is the
    data's business, checked on the real data) plus a few samples."""
    convs = [c for c in [*_PROBES, *samples] if c[0]["role"] != "system" or c in samples]
    convs = [c for c in convs if _render(tokenizer, own, c, False) is not None]
    try:
        check_gate(mask_report(tokenizer, candidate, own, convs))
    except StudioError:
        return False
    return bool(convs)


def _candidates(tokenizer: Any, only: str | None) -> list[tuple[str, str, str]]:
    out = family_candidates(tokenizer, None if only == "chatml" else only)
    marked = chatml_marked_template(tokenizer)
    if marked and only in (None, "chatml"):
        out.append(("chatml", "marked ChatML", marked))
    return out


def plan_template(tokenizer: Any, samples: list[list[dict[str, str]]] = (), *,
                  override: str | None = None,
                  resolve_path: Callable[[str], Path] = Path) -> TemplatePlan:
    """Decide how to get assistant-only loss while training on exactly the serving template.
    `override` is `train.chat_template`: a family name (pin the family: refuse rather than fall
    back) or a path to a marked .jinja file (resolved with `resolve_path`)."""
    own = tokenizer.chat_template
    samples = list(samples)[:3]
    if override is not None:
        return _planned_override(tokenizer, own, samples, override, resolve_path)
    if not isinstance(own, str):
        return TemplatePlan("last_turn", None, "the model has no chat template")
    if _GENERATION_TAG.search(own):
        return TemplatePlan("assistant_only", own, "the model's template marks assistant turns")
    for family, source, marked in _candidates(tokenizer, None):
        if renders_identically(tokenizer, own, marked, samples) and \
                _passes_gate(tokenizer, own, marked, samples):
            return TemplatePlan("assistant_only", marked,
                                f"{family} family: {source} with generation marks, proven identical "
                                "to the model's template", family)
    return TemplatePlan("last_turn", None,
                        "the model's template has no generation marks and matches no known chat "
                        "family; training on the final assistant turn of each conversation")


def _planned_override(tokenizer: Any, own: Any, samples: list[list[dict[str, str]]],
                      override: str, resolve_path: Callable[[str], Path]) -> TemplatePlan:
    where = "train.chat_template"
    if not isinstance(own, str):
        raise StudioError("the model has no chat template to serve with, so no training template "
                          "can be proven equal to it", where=where,
                          hint="import a model whose tokenizer has a chat template")
    if override.endswith((".jinja", ".j2")) or "/" in override:
        path = Path(resolve_path(override))
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StudioError(f"cannot read the chat template file ({exc.strerror})", where=where,
                              hint="give a readable .jinja file") from None
        if not _GENERATION_TAG.search(text):
            raise StudioError("the chat template file has no {% generation %} marks", where=where,
                              hint="wrap each assistant reply and its end-of-turn token in "
                                   "{% generation %}…{% endgeneration %}")
        if not renders_identically(tokenizer, own, text, samples):
            raise StudioError("the chat template file renders differently from the model's serving "
                              "template", where=where,
                              hint="it is a training template only: the model keeps being served "
                                   "with its own template, so both must render the same text")
        return TemplatePlan("assistant_only", text, f"train.chat_template file {path.name}", "file")
    if override not in FAMILY_NAMES:
        raise StudioError(f"unknown chat family {override!r}", where=where,
                          hint=f"one of {', '.join(FAMILY_NAMES)}, or a path to a .jinja file")
    tried = _candidates(tokenizer, override)
    for family, source, marked in tried:
        if renders_identically(tokenizer, own, marked, samples) and \
                _passes_gate(tokenizer, own, marked, samples):
            return TemplatePlan("assistant_only", marked,
                                f"{family} family (train.chat_template): {source}, proven identical "
                                "to the model's template", family)
    what = ("its training template does not render like the model's serving template" if tried
            else "the model's chat template is not this family's official template")
    raise StudioError(f"chat family {override!r}: {what}", where=where,
                      hint="remove train.chat_template to let the engine detect the family, or "
                           "give a marked .jinja file that renders like the model's template")
