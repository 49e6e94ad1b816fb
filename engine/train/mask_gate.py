"""The template and mask gate: proof, before training, that what is trained is what will be served.

Checks on a sample of the training conversations:
  1. the training template renders byte-identical text to the serving template;
  2. which tokens carry loss, per role (system / user / assistant / template glue);
  3. every assistant reply's end-of-turn token carries loss (else the model never learns to stop),
     and no non-assistant token does.
`check_gate` raises StudioError when any check fails; `studio train --dry-run` prints the report.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine.errors import StudioError

SAMPLE = 64


def _render(tok: Any, template: str, msgs: list[dict[str, str]]) -> str:
    return tok.apply_chat_template(msgs, chat_template=template, tokenize=False)


def role_of_chars(tok: Any, template: str, msgs: list[dict[str, str]]) -> list[tuple[int, int, str]]:
    """(start, end, role) character spans of each message in the rendered conversation."""
    spans, prev = [], 0
    full = _render(tok, template, msgs)
    for i, m in enumerate(msgs):
        end = len(_render(tok, template, msgs[: i + 1]))
        if not full.startswith(_render(tok, template, msgs[: i + 1])):
            end = prev  # template is not prefix-stable; attribute nothing to this message
        spans.append((prev, end, m["role"]))
        prev = end
    return spans


def mask_report(tok: Any, train_template: str, serving_template: str | None,
                convs: list[list[dict[str, str]]]) -> dict[str, Any]:
    """Per-role token and loss counts, template equality and end-of-turn coverage on a sample."""
    eot = tok.eos_token_id
    tokens: Counter[str] = Counter()
    trained: Counter[str] = Counter()
    replies = replies_with_eot = mismatched = 0
    for msgs in convs[:SAMPLE]:
        if serving_template is not None and \
                _render(tok, train_template, msgs) != _render(tok, serving_template, msgs):
            mismatched += 1
        enc = tok.apply_chat_template(msgs, chat_template=train_template, tokenize=True,
                                      return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = enc["input_ids"], enc["assistant_masks"]
        plain = tok(_render(tok, train_template, msgs), add_special_tokens=False,
                    return_offsets_mapping=True)
        offsets = plain["offset_mapping"] if plain["input_ids"] == ids else [(-1, -1)] * len(ids)
        spans = role_of_chars(tok, train_template, msgs)
        for tid, m, (start, _end) in zip(ids, mask, offsets):
            role = next((r for a, b, r in spans if a <= start < b), "template")
            tokens[role] += 1
            trained[role] += int(m)
        # each maximal run of trained tokens is one reply; it must end with the end-of-turn token
        run_last = None
        for tid, m in zip([*ids, None], [*mask, 0]):
            if m:
                run_last = tid
            elif run_last is not None:
                replies += 1
                replies_with_eot += int(run_last == eot)
                run_last = None
    roles = {r: {"tokens": tokens[r], "trained": trained[r],
                 "loss_share": round(trained[r] / tokens[r], 4) if tokens[r] else 0.0}
             for r in sorted(tokens)}
    total = sum(tokens.values())
    return {
        "sampled_conversations": min(len(convs), SAMPLE),
        "templates_identical": mismatched == 0,
        "conversations_rendered_differently": mismatched,
        "loss_token_share": round(sum(trained.values()) / total, 4) if total else 0.0,
        "roles": roles,
        "assistant_replies": replies,
        "replies_with_end_of_turn_trained": replies_with_eot,
        "end_of_turn_token": tok.eos_token,
    }


def check_gate(report: dict[str, Any]) -> None:
    """Raise StudioError naming the failed check; silent when everything holds."""
    if not report["templates_identical"]:
        raise StudioError(
            f"the training template renders {report['conversations_rendered_differently']} sampled "
            "conversation(s) differently from the serving template",
            hint="the model would be trained on a format it is never served with; fix the chat template")
    leaked = {r: v["trained"] for r, v in report["roles"].items() if r != "assistant" and v["trained"]}
    if leaked:
        raise StudioError(f"loss is computed on non-assistant tokens: {leaked}",
                          hint="the template's {% generation %} block must cover assistant replies only")
    if report["assistant_replies"] == 0:
        raise StudioError("no assistant token carries loss in the sampled conversations",
                          hint="check that the data has assistant replies and the template marks them")
    if report["replies_with_end_of_turn_trained"] != report["assistant_replies"]:
        missing = report["assistant_replies"] - report["replies_with_end_of_turn_trained"]
        raise StudioError(
            f"the end-of-turn token {report['end_of_turn_token']!r} is not trained in {missing} of "
            f"{report['assistant_replies']} assistant replies",
            hint="put the end-of-turn token inside {% generation %}…{% endgeneration %}, "
                 "or the model never learns to stop")
