"""The template and mask gate: proof, before training, that what is trained is what will be served.

Checks on a sample of the training conversations:
  1. the training template renders byte-identical text to the serving template;
  2. which tokens carry loss, per role (system / user / assistant / template glue);
  3. every assistant reply's end-of-turn token carries loss (else the model never learns to stop),
     and no non-assistant token does.
An assistant reply is what the model generates when served: the text after the prompt the serving
template renders for it (history + generation prompt) through the family's end-of-turn token
(the first special token after a probe reply, so `<|eot_id|>`, `<end_of_turn>`, `<|end|>`… rather
than the eos token). That prompt must be the text preceding the reply in training.
`check_gate` raises StudioError when any check fails; `studio train --dry-run` prints the report.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from jinja2.exceptions import TemplateError

from engine.errors import StudioError

SAMPLE = 64


_PROBE_REPLY = "OK"


def render_or_none(tok: Any, template: str, msgs: list[dict[str, str]], gen: bool = False) -> str | None:
    """The rendered text, or None when the template refuses the conversation (raise_exception)."""
    try:
        return tok.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                       add_generation_prompt=gen)
    except (TemplateError, ValueError, TypeError):
        return None


def end_of_turn_token(tok: Any, template: str) -> str:
    """The token the model emits to end a reply under `template`: the first token after a probe
    reply (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, `<|end|>`, `</s>`…) when it is a special
    or added token, else the tokenizer's eos token."""
    text = render_or_none(tok, template, [{"role": "user", "content": "Hi"},
                                   {"role": "assistant", "content": _PROBE_REPLY}])
    if text and _PROBE_REPLY in text:
        after = text[text.rindex(_PROBE_REPLY) + len(_PROBE_REPLY):]
        ids = tok(after, add_special_tokens=False)["input_ids"] if after else []
        if ids and (ids[0] in tok.all_special_ids or ids[0] in tok.added_tokens_decoder):
            return tok.convert_ids_to_tokens(ids[0])
    return tok.eos_token


def role_of_chars(tok: Any, template: str, msgs: list[dict[str, str]]) -> list[tuple[int, int, str]]:
    """(start, end, role) character spans of each message in the rendered conversation."""
    spans, prev = [], 0
    full = render_or_none(tok, template, msgs) or ""
    for i, m in enumerate(msgs):
        part = render_or_none(tok, template, msgs[: i + 1]) or ""
        end = len(part) if full.startswith(part) else prev  # not prefix-stable: nothing attributed
        spans.append((prev, end, m["role"]))
        prev = max(prev, end)
    return spans


def reply_regions(tok: Any, serving: str, msgs: list[dict[str, str]], full: str,
                  eot: str) -> tuple[list[tuple[int, int, int]], int]:
    """Where each assistant reply lies in the training text `full`: (start, end, end-of-turn
    position), from the end of the prompt the serving template renders for that reply (history +
    generation prompt) through the first end-of-turn token after it — exactly what the model
    generates when served. Also the number of replies whose serving prompt is not the text before
    them in `full` (the reply would be trained in a context it is never served in)."""
    regions, shifted = [], 0
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prompt = render_or_none(tok, serving, msgs[:i], gen=True)
        if prompt is None or not full.startswith(prompt):
            shifted += 1
            continue
        k = full.find(eot, len(prompt))
        regions.append((len(prompt), k + len(eot), k) if k >= 0 else (len(prompt), len(full), -1))
    return regions, shifted


def mask_report(tok: Any, train_template: str, serving_template: str | None,
                convs: list[list[dict[str, str]]]) -> dict[str, Any]:
    """Per-role token and loss counts, template equality and end-of-turn coverage on a sample.
    Roles: 'assistant' is the reply text the model generates when served (through its end-of-turn
    token); 'template' is every other template token (role headers, the newline after an
    end-of-turn token, a closing eos); 'system' / 'user' / … are the other messages."""
    serving = serving_template if serving_template is not None else train_template
    eot = end_of_turn_token(tok, serving)
    eot_id = tok.convert_tokens_to_ids(eot)
    tokens: Counter[str] = Counter()
    trained: Counter[str] = Counter()
    replies = replies_with_eot = reply_tokens_untrained = mismatched = refused = shifted = 0
    for msgs in convs[:SAMPLE]:
        full = render_or_none(tok, train_template, msgs)
        served = render_or_none(tok, serving, msgs)
        if full is None or served is None:
            refused += 1
            continue
        if full != served:
            mismatched += 1
        enc = tok.apply_chat_template(msgs, chat_template=train_template, tokenize=True,
                                      return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = enc["input_ids"], enc["assistant_masks"]
        plain = tok(full, add_special_tokens=False, return_offsets_mapping=True)
        offsets = plain["offset_mapping"] if plain["input_ids"] == ids else [(-1, -1)] * len(ids)
        spans = role_of_chars(tok, train_template, msgs)
        regions, n_shifted = reply_regions(tok, serving, msgs, full, eot)
        shifted += n_shifted
        replies += len(regions)
        eot_trained = dict.fromkeys(k for _a, _b, k in regions if k >= 0)
        for tid, m, (start, _end) in zip(ids, mask, offsets):
            if any(a <= start < b for a, b, _k in regions):
                role = "assistant"
                reply_tokens_untrained += int(not m)
                if start in eot_trained and tid == eot_id:
                    eot_trained[start] = bool(m)
            else:
                role = next((r for a, b, r in spans if a <= start < b), "template")
                role = "template" if role == "assistant" else role
            tokens[role] += 1
            trained[role] += int(m)
        replies_with_eot += sum(1 for v in eot_trained.values() if v)
    roles = {r: {"tokens": tokens[r], "trained": trained[r],
                 "loss_share": round(trained[r] / tokens[r], 4) if tokens[r] else 0.0}
             for r in sorted(tokens)}
    total = sum(tokens.values())
    return {
        "sampled_conversations": min(len(convs), SAMPLE),
        "conversations_refused_by_template": refused,
        "templates_identical": mismatched == 0,
        "conversations_rendered_differently": mismatched,
        "replies_with_shifted_prompt": shifted,
        "loss_token_share": round(sum(trained.values()) / total, 4) if total else 0.0,
        "roles": roles,
        "assistant_replies": replies,
        "replies_with_end_of_turn_trained": replies_with_eot,
        "reply_tokens_untrained": reply_tokens_untrained,
        "end_of_turn_token": eot,
    }


def check_gate(report: dict[str, Any], where: str | None = None) -> None:
    """Raise StudioError naming the failed check (at `where`, e.g. `train.chat_template` when the
    training template was given by the config); silent when everything holds."""
    def fail(what: str, hint: str) -> None:
        raise StudioError(what, where=where, hint=hint)

    if report["conversations_refused_by_template"]:
        fail(f"the chat template refuses {report['conversations_refused_by_template']} sampled "
             "conversation(s)",
             "the serving template raises on them (e.g. Gemma 2 has no system role; Mistral and "
             "Gemma need strictly alternating user/assistant turns): fix the data")
    if not report["templates_identical"]:
        fail(f"the training template renders {report['conversations_rendered_differently']} sampled "
             "conversation(s) differently from the serving template",
             "the model would be trained on a format it is never served with; fix the chat template")
    if report["replies_with_shifted_prompt"]:
        fail(f"in {report['replies_with_shifted_prompt']} sampled assistant repl(ies) the prompt the "
             "serving template renders for the reply is not the text that precedes it in training",
             "the template places earlier turns differently once a reply follows (Mistral v0.3 and "
             "Nemo put the system prompt only before the last user message, and drop it when the "
             "conversation ends with a reply): remove system messages from this data or use a "
             "model whose template keeps them in place")
    leaked = {r: v["trained"] for r, v in report["roles"].items() if r != "assistant" and v["trained"]}
    if leaked:
        fail(f"loss is computed on non-assistant tokens: {leaked}",
             "the template's {% generation %} block must cover assistant replies and their "
             "end-of-turn token only (not role headers or the text after the end-of-turn token)")
    if report["assistant_replies"] == 0:
        fail("no assistant token carries loss in the sampled conversations",
             "check that the data has assistant replies and the template marks them")
    if report["replies_with_end_of_turn_trained"] != report["assistant_replies"]:
        missing = report["assistant_replies"] - report["replies_with_end_of_turn_trained"]
        fail(f"the end-of-turn token {report['end_of_turn_token']!r} is not trained in {missing} of "
             f"{report['assistant_replies']} assistant replies",
             "put the end-of-turn token inside {% generation %}…{% endgeneration %}, "
             "or the model never learns to stop")
    if report["reply_tokens_untrained"]:
        fail(f"{report['reply_tokens_untrained']} token(s) of the sampled assistant replies carry "
             "no loss", "the {% generation %} block must cover the whole reply")
