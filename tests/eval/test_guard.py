"""The built-in guard suite: 40 items, each passed by its own reference and failed by junk."""

from __future__ import annotations

from collections import Counter

import pytest

from engine.config import EvalSpec, GraderSpec
from engine.errors import StudioError
from engine.eval import guard
from engine.grading.graders import grade_batch
from engine.eval.suite import load_suite, read_jsonl


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return [item for item, _ in read_jsonl(guard.items_path())]


def test_the_guard_suite_loads(items: list[dict]) -> None:
    assert len(items) == 40 and len({it["item_id"] for it in items}) == 40
    assert Counter(it["meta"]["skill"] for it in items) == {
        "arithmetic": 8, "units": 5, "yes_no": 8, "format": 9, "json": 5, "reading": 5}
    for it in items:
        assert it["item_id"].startswith(f"guard-{it['meta']['skill']}-")
        assert [m["role"] for m in it["prompt"]] == ["user"] and it["reference"]
        guard.item_grader(it)  # a valid GraderSpec
    yes_no = [it["reference"] for it in items if it["meta"]["skill"] == "yes_no"]
    assert Counter(yes_no) == {"yes": 4, "no": 4}  # always answering one way scores half


def test_every_reference_passes_its_own_grader(items: list[dict]) -> None:
    for it in items:
        assert guard.grade(it["reference"], it["reference"], it) == 1.0, it["item_id"]
    # the same through the task path: the default grader of a builtin:guard task
    results = grade_batch(guard.default_grader(), [it["reference"] for it in items],
                          [it["reference"] for it in items], items)
    assert all(r.score == 1.0 and r.passed for r in results)


@pytest.mark.parametrize("junk", ["", "I'm sorry, I cannot help with that.", "asdf qwerty zxcv",
                                  "yes", "{}", "Queue: BILLING-REFUND | Priority: P2"])
def test_junk_answers_fail_nearly_everything(items: list[dict], junk: str) -> None:
    passed = sum(guard.grade(junk, it["reference"], it) for it in items)
    assert passed <= 4  # "yes" passes the four yes items and nothing else


def test_echoing_the_question_fails_every_item(items: list[dict]) -> None:
    """A model that stopped answering and repeats its input scores zero."""
    assert sum(guard.grade(it["prompt"][-1]["content"], it["reference"], it) for it in items) == 0


def test_answers_with_a_few_words_around_them_pass(items: list[dict]) -> None:
    by_id = {it["item_id"]: it for it in items}
    ok = {"guard-arithmetic-01": "The answer is 42.", "guard-units-03": "1,500 grams",
          "guard-yes_no-01": "No, 7 is odd.", "guard-format-02": "THERMOSTAT",
          "guard-json-01": '{"status": "ok"}', "guard-reading-04": "Mice."}
    for item_id, answer in ok.items():
        assert guard.grade(answer, by_id[item_id]["reference"], by_id[item_id]) == 1.0, item_id
    bad = {"guard-arithmetic-01": "17 + 25 = 42", "guard-format-02": "Thermostat",
           "guard-json-01": '```json\n{"status": "ok"}\n```', "guard-yes_no-02": "No"}
    for item_id, answer in bad.items():
        assert guard.grade(answer, by_id[item_id]["reference"], by_id[item_id]) == 0.0, item_id


def test_guard_as_a_suite_task(registry) -> None:
    spec = EvalSpec.model_validate({"suite": {"tasks": [
        {"name": "guard", "path": "builtin:guard", "guard": True, "limit": 10}]}})
    (task,) = load_suite(spec, None, registry, "default")
    assert task.guard and len(task) == 10 and task.slice_keys == ["skill"]
    assert task.graders == [GraderSpec(type="python", name="guard", function=guard.GRADE_FUNCTION)]
    assert task.source["ref"] == f"builtin:guard@v{guard.GUARD_VERSION}"
    assert task.eval_spec.dataset == task.source["ref"]


def test_an_item_without_its_grader_is_refused() -> None:
    with pytest.raises(StudioError, match="has no meta.grader"):
        guard.grade("42", "42", {"item_id": "x", "meta": {"skill": "arithmetic"}})
    with pytest.raises(StudioError, match="invalid meta.grader"):
        guard.grade("42", "42", {"item_id": "x", "meta": {"grader": {"type": "regex", "bogus": 1}}})
