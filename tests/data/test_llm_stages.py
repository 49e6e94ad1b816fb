"""Tests for the LLM-assisted refine stages (judge, rewrite, Q/A extraction, preferences) on a local model.

The model is the tiny random-weight Llama built in code; its scores and answers are meaningless
but real and deterministic. Stage logic that depends on what the model says (rewrite guards,
pair filters) is also tested with a scripted backend; the SmolLM2 test (slow) checks that the
judge ranks an obviously good support reply above a useless one.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.config import (LlmExtractQaSpec, LlmRewriteSpec, LlmStagesSpec, parse_config)
from engine.data.stages.llm import (extract_qa, judge, open_backend, parse_pairs, preference_row,
                                    preferences, rewrite)
from engine.data.stages.llm.extract_qa import grounding, keep_pairs
from engine.data.stages.llm.rewrite import check_rewrite
from engine.errors import ConfigError, StudioError
from engine.grading.rubric import CHOICES, judge_prompt, score_from_logprobs, transcript
from engine.records import Conversation, Reject, SourceRef
from engine.train.data import convert, load_examples

FIXTURE = Path(__file__).parent / "fixtures" / "llm" / "support_conversations.jsonl"


def load_convs() -> list[Conversation]:
    return [Conversation.from_dict(json.loads(line)) for line in FIXTURE.read_text().splitlines()]


def llm(**sections: Any) -> LlmStagesSpec:
    base: dict[str, Any] = {"model": "tiny", "batch_size": 4, "max_new_tokens": 24}
    base.update(sections)
    return LlmStagesSpec(**base)


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> Any:
    from engine.generation.transformers_backend import TransformersBackend

    return TransformersBackend(tiny_model_dir)


class Scripted:
    """A backend that answers from a script (prompt → reply), for the stages' own logic."""

    def __init__(self, reply: Any):
        self.reply = reply
        self.calls: list[int] = []

    def generate(self, prompts: list, max_new_tokens: int, batch_size: int, progress: Any = None,
                 label: str = "generate") -> list[str]:
        self.calls.append(len(prompts))
        return [self.reply(p) for p in prompts]


# ------------------------------------------------------------------------------- backend
def test_choice_logprobs_are_real_deterministic_and_batch_invariant(backend: Any) -> None:
    prompts = [judge_prompt(c, "Be helpful.", 6000) for c in load_convs()]
    first = backend.choice_logprobs(prompts, CHOICES, batch_size=1)
    again = backend.choice_logprobs(prompts, CHOICES, batch_size=1)
    batched = backend.choice_logprobs(prompts, CHOICES, batch_size=4)  # prompts differ in length
    assert first == again
    assert len(first) == len(prompts) and all(len(row) == 5 for row in first)
    for row, other in zip(first, batched):
        assert all(lp < 0 for lp in row)
        assert sum(math.exp(lp) for lp in row) <= 1.0
        assert max(abs(a - b) for a, b in zip(row, other)) < 1e-4
    assert len({tuple(round(x, 6) for x in row) for row in first}) == len(prompts)  # depends on the prompt


def test_choice_logprobs_need_single_token_choices(backend: Any) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        backend.choice_logprobs([[{"role": "user", "content": "hi"}]], ["1", "thermostat"])


def test_open_backend_resolves_store_names(workspace: Any, registry: Any, tiny_model_dir: Path) -> None:
    from engine.models.store import import_model

    import_model(workspace, registry, str(tiny_model_dir), "tiny-judge")
    b = open_backend("tiny-judge", registry, "acme", threads=1)
    assert len(b.choice_logprobs([[{"role": "user", "content": "hi"}]], CHOICES)[0]) == 5
    with pytest.raises(StudioError, match="unknown model"):
        open_backend("no-such-model", registry, "acme")


def test_transcript_keeps_the_end_and_hides_system() -> None:
    conv = load_convs()[3]
    full = transcript(conv.messages, 100_000)
    assert full.startswith("Customer: Hi, my smart plug") and "System:" not in full
    assert full.endswith("Agent: You're welcome! Have a great day.")
    cut = transcript(conv.messages, 200)
    assert cut.startswith("[…]") and len(cut) == 203 and cut.endswith(full[-50:])


# --------------------------------------------------------------------------------- config
def test_config_requires_a_model_for_enabled_stages() -> None:
    assert LlmStagesSpec().judge.enabled is False  # off by default, no model needed
    with pytest.raises(ValidationError, match="llm.judge is enabled but llm.model is not set"):
        LlmStagesSpec(judge={"enabled": True})
    LlmStagesSpec(preferences={"enabled": True, "model": "base"})  # its own model is enough
    with pytest.raises(ValidationError, match="min_ratio must be below max_ratio"):
        LlmRewriteSpec(min_ratio=2.0, max_ratio=1.5)
    with pytest.raises(ConfigError) as exc:
        parse_config("kind: refine\nrefine:\n  dataset: d\n  inputs: [{path: a.jsonl, format: "
                     "openai_jsonl}]\n  llm:\n    judge: {enabled: true, treshold: 2}\n")
    assert "treshold" in str(exc.value)


# ---------------------------------------------------------------------------------- judge
def test_score_is_the_expected_digit_over_renormalised_probabilities() -> None:
    score, probs = score_from_logprobs([math.log(0.01)] * 4 + [math.log(0.06)])
    assert probs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.6])
    assert score == pytest.approx(0.1 * (1 + 2 + 3 + 4) + 0.6 * 5)
    assert score_from_logprobs([-1e4, -1e4, 0.0, -1e4, -1e4])[0] == pytest.approx(3.0)


def _notes(backend: Any, spec: LlmStagesSpec, convs: list[Conversation] | None = None) -> list[dict]:
    notes: list[dict[str, Any]] = []
    list(judge(convs or load_convs()[:3], spec, backend, notes=notes))
    return notes


def _scores(backend: Any, spec: LlmStagesSpec) -> dict[str, float]:
    return {n["id"]: n["score"] for n in _notes(backend, spec, load_convs())}


def test_judge_rejects_below_threshold_and_keeps_the_rest(backend: Any) -> None:
    scores = _scores(backend, llm(judge={"enabled": True, "threshold": 1.0}))
    assert len(scores) == 8 and all(1.0 <= s <= 5.0 for s in scores.values())
    threshold = sorted(scores.values())[4]  # 4 below, 4 at or above
    notes: list[dict[str, Any]] = []
    out = list(judge(load_convs(), llm(judge={"enabled": True, "threshold": threshold}),
                     backend, notes=notes))
    assert [getattr(o, "record_id", None) or o.id for o in out] == [c.id for c in load_convs()]
    kept = [o for o in out if isinstance(o, Conversation)]
    rejects = [o for o in out if isinstance(o, Reject)]
    assert {c.id for c in kept} == {i for i, s in scores.items() if s >= threshold}
    assert len(rejects) == 4
    for conv in kept:
        assert conv.meta["judge_score"] == scores[conv.id] and conv.meta["channel"] == "chat"
    for rej in rejects:
        assert (rej.stage, rej.reason) == ("judge", "judge_below_threshold")
        assert re.fullmatch(rf"score {scores[rej.record_id]:g} < {threshold:g}", rej.detail)
        assert rej.source.id == rej.record_id
    assert [n["id"] for n in notes] == [c.id for c in load_convs()]
    assert all(n["reason"] is None and sum(n["probs"]) == pytest.approx(1.0, abs=1e-3) for n in notes)


def test_judge_scores_do_not_depend_on_the_batch_size(backend: Any) -> None:
    one = _scores(backend, llm(batch_size=1, judge={"enabled": True}))
    four = _scores(backend, llm(batch_size=4, judge={"enabled": True}))
    assert one.keys() == four.keys()
    assert all(abs(one[k] - four[k]) < 1e-3 for k in one)


def test_judge_reasons_are_bounded_and_stay_out_of_rejects(backend: Any) -> None:
    class Explaining:  # real scores; a reason that quotes the customer, to prove it stays out
        choice_logprobs = backend.choice_logprobs

        def __init__(self) -> None:
            self.asked: list[tuple[list, int]] = []

        def generate(self, prompts: list, max_new_tokens: int, batch_size: int, **_: Any) -> list[str]:
            self.asked.extend((p, max_new_tokens) for p in prompts)
            return [f"The agent ignored: {p[1]['content'][-60:]}" for p in prompts]

    spec = llm(judge={"enabled": True, "threshold": 5.0, "reasons": True, "reason_max_tokens": 6})
    notes: list[dict[str, Any]] = []
    explaining = Explaining()
    out = list(judge(load_convs()[:3], spec, explaining, notes=notes))
    assert all(isinstance(o, Reject) for o in out)  # nothing scores 5.0 exactly
    assert [n["score"] for n in notes] == [n["score"] for n in _notes(backend, spec)]
    for note, rej, (prompt, max_new) in zip(notes, out, explaining.asked):
        assert max_new == 6
        assert prompt[-2] == {"role": "assistant", "content": str(round(note["score"]))}
        assert prompt[-1]["content"].startswith("In one short sentence, why")
        assert note["reason"].startswith("The agent ignored: ")
        assert re.fullmatch(r"score \d\.\d+ < 5", rej.detail)  # codes and numbers only
        assert "ignored" not in json.dumps(rej.to_dict())
    real = _notes(backend, spec)  # the tiny model's own reasons: blank, but generated
    assert all(n["reason"] == "" for n in real)


def test_judge_disabled_passes_records_through() -> None:
    convs = load_convs()
    assert list(judge(convs, LlmStagesSpec(), backend=None)) == convs


def test_judge_reports_progress(backend: Any) -> None:
    from rich.progress import Progress

    with Progress(disable=True) as progress:
        list(judge(load_convs(), llm(judge={"enabled": True}), backend, progress=progress))
        (task,) = progress.tasks
    assert task.description == "judge" and task.completed == 8 and task.total == 8


# -------------------------------------------------------------------------------- rewrite
def test_check_rewrite_guards() -> None:
    spec = LlmRewriteSpec()
    orig = "Your refund for <ORDER_1> is on its way; we emailed <EMAIL_2>."
    good = "Thanks for your patience! The refund for <ORDER_1> is on its way and we emailed <EMAIL_2>."
    assert check_rewrite(orig, good, spec) is None
    assert check_rewrite(orig, "   ", spec) == "empty"
    assert check_rewrite(orig, "Refund sent.", spec) == "length"
    assert check_rewrite(orig, good * 3, spec) == "length"
    assert check_rewrite(orig, good.replace("<EMAIL_2>", "your inbox"), spec) == "placeholders"
    assert check_rewrite(orig, good.replace("<EMAIL_2>", "<EMAIL_3>"), spec) == "placeholders"
    assert check_rewrite(orig, "  " + orig.replace(" ", "\n "), spec) == "unchanged"


def test_rewrite_replaces_only_safe_rewrites() -> None:
    convs = load_convs()

    def reply(prompt: list[dict[str, str]]) -> str:
        text = prompt[-1]["content"].split("Agent's reply to rewrite:\n", 1)[1]
        original = text.rsplit("\n\nWrite only the rewritten reply.", 1)[0]
        if "<ORDER_2>" in original:
            return original.replace("<ORDER_2>", "your order")  # drops a placeholder
        return "Thank you for contacting Brightwave Home! " + original

    stats: Counter = Counter()
    scripted = Scripted(reply)
    out = list(rewrite(convs, llm(rewrite={"enabled": True}), scripted, stats=stats))
    assert [c.id for c in out] == [c.id for c in convs] and scripted.calls == [4, 4]
    # "ok", "idk, try again later" and "You're welcome! …" more than double: originals kept
    assert stats == Counter(rewritten=4, kept_placeholders=1, kept_length=3)
    by_id = {c.id: c for c in out}
    assert by_id["bw-1002"].messages[-1]["content"].startswith("Thank you for contacting")
    assert by_id["bw-1002"].messages[:-1] == convs[1].messages[:-1]
    assert by_id["bw-1002"].meta == {"channel": "chat", "rewritten": True}
    assert by_id["bw-1005"] == convs[4] and by_id["bw-1003"] == convs[2]
    assert convs[1].messages[-1]["content"].startswith("I can see")  # input not mutated


def test_rewrite_runs_on_the_tiny_model(backend: Any) -> None:
    convs = load_convs()
    stats: Counter = Counter()
    spec = llm(rewrite={"enabled": True})
    out = list(rewrite(convs, spec, backend, stats=stats))
    assert out == convs and stats == Counter(kept_empty=8)  # the random model writes blanks


# ----------------------------------------------------------------------------- extract_qa
def test_parse_pairs_well_formed_and_variants() -> None:
    text = ("Q: How do I connect the P2 plug to Wi-Fi?\nA: Open Devices > P2 > Wi-Fi and pick "
            "your 2.4 GHz network.\n\nQ: Can I schedule the P2 plug?\nA: Yes, in Devices > P2 > "
            "Schedules.\nSchedules run even when your phone is offline.\n")
    assert parse_pairs(text) == [
        ("How do I connect the P2 plug to Wi-Fi?",
         "Open Devices > P2 > Wi-Fi and pick your 2.4 GHz network."),
        ("Can I schedule the P2 plug?",
         "Yes, in Devices > P2 > Schedules.\nSchedules run even when your phone is offline."),
    ]
    fancy = ("Here are the pairs:\n1. **Question:** Do I need the original box\nfor a return?\n"
             "   **Answer:** No, any sturdy box works.\n- q: Refund time?\n- a: 2 business days.")
    assert parse_pairs(fancy) == [("Do I need the original box for a return?", "No, any sturdy box works."),
                                  ("Refund time?", "2 business days.")]
    assert parse_pairs("NONE") == [] and parse_pairs("  none. ") == []


def test_parse_pairs_malformed_is_none_never_an_error() -> None:
    for text in ("", "The customer asked about routers.", "A: an answer without a question",
                 "Q: a question without an answer?\nQ:\nA:", "{\"q\": 1", "Q:\n\nA: \n",
                 "\x00\ufffd<|im_end|>"):
        assert parse_pairs(text) is None
    assert parse_pairs("Q: first?\nQ: Second question?\nA: the answer") == [
        ("Second question?", "the answer")]


def test_keep_pairs_filters_invented_and_ungrounded() -> None:
    conv = load_convs()[6]  # doorbell return, <ORDER_3>
    stats: Counter = Counter()
    pairs = [("How do I return the D1 doorbell?", "Go to Orders > <ORDER_3> > Return and print the free label."),
             ("How do I return the D1 doorbell?", "Print the free label."),
             ("Which order?", "<ORDER_9>"),
             ("What is the warranty on the D1?", "Five years, covering water damage and theft."),
             ("Hi?", "ok"),
             ("Do I need the original box?", "No, any sturdy box works.")]
    kept = keep_pairs(pairs, conv, LlmExtractQaSpec(max_pairs=5), stats)
    assert kept == [pairs[0], pairs[5]]
    assert stats == Counter(pairs_repeated=1, pairs_invented_placeholder=1, pairs_ungrounded=1,
                            pairs_too_short=1)
    assert grounding("No, any sturdy box works.", "any sturdy box works, no") == 1.0


def test_extract_qa_emits_pairs_after_their_source() -> None:
    convs = load_convs()
    outputs = {"bw-1004": "Q: Which Wi-Fi band does the P2 plug need?\nA: The P2 only works on 2.4 GHz networks.",
               "bw-1007": "I could not find any."}

    def reply(prompt: list[dict[str, str]]) -> str:
        return outputs["bw-1004" if "smart plug" in prompt[-1]["content"] else "bw-1007"]

    stats: Counter = Counter()
    scripted = Scripted(reply)
    out = list(extract_qa(convs, llm(extract_qa={"enabled": True}), scripted, stats=stats))
    assert scripted.calls == [1, 1]  # only the two long transcripts are sent
    ids = [o.id for o in out]
    assert ids == ["bw-1001", "bw-1002", "bw-1003", "bw-1004", "bw-1004-qa1", "bw-1005", "bw-1006",
                   "bw-1007", "bw-1008"]
    pair = out[4]
    assert pair.messages == [convs[3].messages[0],
                             {"role": "user", "content": "Which Wi-Fi band does the P2 plug need?"},
                             {"role": "assistant", "content": "The P2 only works on 2.4 GHz networks."}]
    assert pair.source == convs[3].source
    assert pair.meta == {"channel": "chat", "extracted_from": "bw-1004"}
    assert stats == Counter(transcripts=2, unparseable=1, pairs=1)

    replaced = list(extract_qa(convs, llm(extract_qa={"enabled": True, "keep_source": False}),
                               Scripted(reply)))
    rej = [o for o in replaced if isinstance(o, Reject)]
    assert [(r.record_id, r.reason, r.detail) for r in rej] == [("bw-1004", "replaced_by_qa", "1 pairs")]
    assert "bw-1007" in [o.id for o in replaced if isinstance(o, Conversation)]


def test_extract_qa_runs_on_the_tiny_model(backend: Any) -> None:
    stats: Counter = Counter()
    spec = llm(extract_qa={"enabled": True, "min_turns": 4})
    out = list(extract_qa(load_convs(), spec, backend, stats=stats))
    assert out == load_convs()  # the random model writes blanks: no pairs, nothing breaks
    assert stats == Counter(transcripts=2, unparseable=2)


# ----------------------------------------------------------------------------- preferences
def test_preference_rows_validate_for_dpo(tmp_path: Path) -> None:
    convs = load_convs()
    rows: list[tuple[str, dict[str, Any]]] = []
    stats: Counter = Counter()
    scripted = Scripted(lambda p: f"Please restart your device ({len(p)} messages so far).")
    out = list(preferences(convs, llm(preferences={"enabled": True}), scripted,
                           lambda i, r: rows.append((i, r)), stats=stats))
    assert out == convs and stats == Counter(pairs=8) and scripted.calls == [4, 4]
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for _, r in rows))
    loaded = load_examples(path, "preference", "openai_preference")
    by_id = {c.id: c for c in convs}
    assert [i for i, _ in rows] == list(by_id)
    for (cid, row), dpo in zip(rows, loaded):
        assert convert(row, "auto", "preference") == dpo
        assert dpo["prompt"] == by_id[cid].messages[:-1]
        assert dpo["chosen"] == [by_id[cid].messages[-1]]
        assert dpo["rejected"] == [{"role": "assistant", "content": "Please restart your device "
                                    f"({len(by_id[cid].messages) - 1} messages so far)."}]


def test_preferences_run_on_the_tiny_model(backend: Any) -> None:
    # The random tiny model (tied embeddings) greedily repeats the prompt's last token, a newline:
    # every answer is blank, so no row may be written (the trainer refuses empty replies).
    rows: list[Any] = []
    stats: Counter = Counter()
    spec = llm(preferences={"enabled": True, "max_new_tokens": 8})
    out = list(preferences(load_convs(), spec, backend, lambda i, r: rows.append(r), stats=stats))
    assert out == load_convs() and rows == [] and stats == Counter(empty=8)


def test_preferences_skip_identical_and_empty_answers() -> None:
    convs = load_convs()
    golden = {c.messages[-2]["content"]: c.messages[-1]["content"] for c in convs}

    def reply(prompt: list[dict[str, str]]) -> str:
        answer = golden[prompt[-1]["content"]]
        if "E4" in answer:
            return "  " + answer.replace(" ", "\n")  # same after whitespace normalisation
        return "" if "<ORDER_2>" in answer else "Please restart the device."

    rows: list[tuple[str, dict[str, Any]]] = []
    stats: Counter = Counter()
    no_prompt = Conversation("bw-x", [{"role": "user", "content": "Hello?"}], SourceRef("x.jsonl", 1))
    list(preferences([*convs, no_prompt], llm(preferences={"enabled": True}), Scripted(reply),
                     lambda i, r: rows.append((i, r)), stats=stats))
    assert stats == Counter(pairs=6, identical=1, empty=1, no_prompt=1)
    assert [i for i, _ in rows] == [c.id for c in convs if c.id not in ("bw-1001", "bw-1005")]
    assert rows[0][1]["non_preferred_output"][0]["content"] == "Please restart the device."
    assert preference_row([{"role": "user", "content": "q"}], "a", "b") == {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "a"}],
        "non_preferred_output": [{"role": "assistant", "content": "b"}]}


# ------------------------------------------------------------------------------- SmolLM2
@pytest.mark.slow
def test_smollm2_judge_prefers_a_helpful_reply(smollm2_workspace: Any) -> None:
    from engine.registry import Registry

    registry = Registry(smollm2_workspace.registry_path)
    backend = open_backend("smollm2-135m-instruct", registry, "acme")
    question = "My Brightwave thermostat shows error E4 and the heating is off. What should I do?"
    good = ("I'm sorry about that. E4 means the thermostat lost contact with the boiler relay. "
            "Hold the reset button for 10 seconds until the light turns blue, then set your "
            "temperature again. If E4 comes back, reply here and we will send a technician.")
    bad = "idk lol"
    convs = [Conversation(cid, [{"role": "user", "content": question},
                                {"role": "assistant", "content": reply}], SourceRef("s.jsonl", 1))
             for cid, reply in (("good", good), ("bad", bad))]
    notes: list[dict[str, Any]] = []
    list(judge(convs, LlmStagesSpec(model="smollm2-135m-instruct",
                                    judge={"enabled": True, "threshold": 1.0}), backend, notes=notes))
    scores = {n["id"]: n["score"] for n in notes}
    print("smollm2 judge scores:", scores)
    assert scores["good"] > scores["bad"]
