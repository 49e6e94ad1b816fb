"""Tests for decontamination: eval questions in training data, near-copies, the `against` files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.config import DecontamSpec
from engine.data.stages.decontam import EvalIndex, decontaminate, load_against
from engine.errors import StudioError
from engine.records import Conversation, Reject, SourceRef
from tests.data.fixtures.dedup.support_pairs import AGENT, near_dup_pairs, templated_pairs

FIXTURES = Path(__file__).parent / "fixtures" / "dedup"
TEMPLATE = AGENT["tech"][0].format(product="Halo thermostat")
QUESTION = ("After the last firmware update my Halo thermostat does not turn on anymore, the screen "
            "stays black even after I replaced the batteries")

Msgs = list[dict[str, str]]


def c(cid: str, *turns: tuple[str, str]) -> Conversation:
    return Conversation(id=cid, messages=[{"role": r, "content": t} for r, t in turns],
                        source=SourceRef("train.jsonl", 1, cid))


def of(cid: str, messages: Msgs) -> Conversation:
    return Conversation(id=cid, messages=messages, source=SourceRef("t.jsonl", 1, cid))


def index_with(*items: Conversation, spec: DecontamSpec | None = None) -> EvalIndex:
    index = EvalIndex(spec or DecontamSpec())
    for item in items:
        index.add(item)
    return index


EVAL = c("ev1", ("user", QUESTION), ("assistant", TEMPLATE))


def test_eval_question_pasted_into_a_longer_training_conversation() -> None:
    train = c("t1", ("user", "Hi, two things. First, the invoice for order #551208 looks wrong. "
                             f"Second: {QUESTION.lower()}!! Can you help with both?"),
              ("assistant", "Sure, let me look at both issues for you."),
              ("user", "thanks"), ("assistant", "You're welcome."))
    hit = index_with(EVAL).check(train)
    assert hit == ("eval_ngram_overlap", "100% of 8-grams shared with eval item ev1")


def test_partial_overlap_is_reported_as_a_share_and_respects_max_overlap() -> None:
    half = " ".join(QUESTION.split()[:12])  # the first 12 of 23 words: 5 of its 16 8-grams
    train = c("t2", ("user", f"{half}, and the app crashes when I open it."), ("assistant", "Ok."))
    assert index_with(EVAL).check(train) is None  # 31% < 50%
    hit = index_with(EVAL, spec=DecontamSpec(max_overlap=0.3)).check(train)
    assert hit == ("eval_ngram_overlap", "31% of 8-grams shared with eval item ev1")


def test_near_copy_of_an_eval_item() -> None:
    typos = ("Hello, after the lst firmware update my Halo thermostat does not trun on anymore, "
             "the screen stays blak even after I replaced the batteries")
    hit = index_with(EVAL).check(c("t3", ("user", typos), ("assistant", TEMPLATE)))
    assert hit is not None and hit[0] == "eval_near_duplicate"
    assert re.fullmatch(r"jaccard≈0\.[7-9]\d with eval item ev1", hit[1])


def test_shared_templated_agent_replies_are_not_contamination() -> None:
    index = index_with(EVAL)
    other = c("t4", ("user", "My Halo thermostat keeps disconnecting from the wifi every few hours "
                             "and I have to add it again"), ("assistant", TEMPLATE))
    assert index.check(other) is None
    # the eval item's agent reply pasted anywhere in training is not counted either
    quoted = c("t5", ("user", "What does your standard reply say?"),
               ("assistant", f"Here it is: {TEMPLATE} Anything else?"))
    assert index.check(quoted) is None


def test_short_eval_prompts() -> None:
    index = index_with(c("s1", ("user", "How do I reset the hub?")),  # 6 words: one 6-gram
                       c("s2", ("user", "Refund please")))               # 2 words: near-dup only
    inside = c("t6", ("user", "Quick one before I forget: how do I reset the hub? It is the "
                              "white Echo hub in the hallway, bought last year."), ("assistant", "Ok."))
    assert index.check(inside) == ("eval_ngram_overlap", "100% of 6-grams shared with eval item s1")
    assert index.check(c("t7", ("user", "My refund please, order #1234 was cancelled weeks ago and "
                                        "I still wait"), ("assistant", "Ok."))) is None
    assert index.check(c("t8", ("user", "refund please!"), ("assistant", ""))) is not None


def test_generated_pairs_recall_and_templated_false_positives() -> None:
    pairs = near_dup_pairs(150, seed=41)
    index = index_with(*[of(f"e{i}", a) for i, (a, _, _) in enumerate(pairs)])
    caught = sum(index.check(of(f"t{i}", b)) is not None for i, (_, b, _) in enumerate(pairs))
    assert caught / len(pairs) >= 0.95
    distinct = templated_pairs(150, seed=42)
    index = index_with(*[of(f"e{i}", a) for i, (a, _) in enumerate(distinct)])
    flagged = 0
    for i, (_, b) in enumerate(distinct):
        # compare with its own pair only: other generated items may share problem and product
        hit = index.check(of(f"t{i}", b))
        flagged += hit is not None and hit[1].endswith(f"eval item e{i}")
    assert flagged / len(distinct) <= 0.02


def test_two_pass_wiring_rejects_train_records_only() -> None:
    eval_split = [EVAL]
    train = [c("a", ("user", f"Hello! {QUESTION}"), ("assistant", "Let me check.")),
             c("b", ("user", "Where is my parcel, order #998877?"), ("assistant", TEMPLATE))]
    index = EvalIndex(DecontamSpec())
    assert index.add_all(eval_split) == 1 and len(index) == 1
    out = list(decontaminate(train, index))
    assert [x.id for x in out if isinstance(x, Conversation)] == ["b"]
    (rej,) = [x for x in out if isinstance(x, Reject)]
    assert (rej.record_id, rej.stage, rej.reason) == ("a", "decontam", "eval_ngram_overlap")
    assert "firmware" not in rej.detail and "thermostat" not in rej.detail


def test_load_against_reads_chat_and_eval_suite_files() -> None:
    items = list(load_against([FIXTURES / "eval_chat.jsonl", FIXTURES / "eval_suite.jsonl"]))
    assert [(i.source.file, i.source.line, i.source.id) for i in items] == [
        ("eval_chat.jsonl", 1, "EV-1"), ("eval_chat.jsonl", 3, "EV-2"),
        ("eval_suite.jsonl", 1, "Q-7"), ("eval_suite.jsonl", 2, None), ("eval_suite.jsonl", 3, "12")]
    assert len({i.id for i in items}) == 5 and all(re.fullmatch(r"[0-9a-f]{16}", i.id) for i in items)
    assert [[m["role"] for m in i.messages] for i in items] == [
        ["system", "user", "assistant"], ["user", "assistant"], ["user", "assistant"], ["user"],
        ["system", "user", "assistant"]]
    index = index_with(*items)
    pasted = c("t9", ("user", "hey, my sentry doorbell cam records motion all night long even though "
                              "nothing is happening outside, how do I make it less sensitive? thx"),
               ("assistant", "Open the app, go to Settings > Motion and lower the sensitivity."))
    assert index.check(pasted) == ("eval_ngram_overlap",
                                   f"100% of 8-grams shared with eval item {items[2].id}")


@pytest.mark.parametrize("line, message", [
    ('{"messages": [{"role": "user", "content": "Secret order 4411"}', "not JSON"),
    ('{"question": "Secret order 4411"}', "no 'messages', 'prompt' or 'input' field"),
    ('{"prompt": ""}', "'prompt' is neither"),
    ('{"messages": [{"role": "user", "content": 7}]}', "'messages' is not"),
    ('["Secret order 4411"]', "not a JSON object"),
])
def test_bad_against_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "evalset.jsonl"
    good = json.dumps({"prompt": "Where is my parcel?"})
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(StudioError) as info:
        list(load_against([path]))
    assert info.value.where == f"{path}:3"
    assert message in info.value.what
    assert "Secret" not in str(info.value) and "4411" not in str(info.value)


def test_missing_against_file(tmp_path: Path) -> None:
    with pytest.raises(StudioError) as info:
        list(load_against([tmp_path / "nope.jsonl"]))
    assert info.value.where == str(tmp_path / "nope.jsonl")
