"""Tests for engine.grading.judge: rubric and pairwise judges on the tiny model, order bookkeeping on a
scripted backend, and the OpenAI score_model/label_model graders."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from engine.config import GraderSpec
from engine.grading.graders import grade_batch, grade_detail
from engine.grading.judge import (JudgeResult, PairwiseResult, combine_orders, judge_pairwise,
                                  judge_single, summarize_pairwise)

RUBRIC = "Rate how well the reply solves the customer's problem for Brightwave Home support."
PAIR_RUBRIC = "Pick the reply that solves the customer's problem better, politely and correctly."


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are Brightwave Home support."},
            {"role": "user", "content": text}]


SUPPORT = [
    ("My Brightwave thermostat shows 'offline' since this morning.",
     "Sorry about that! Unplug the thermostat for 10 seconds, then reconnect it to Wi-Fi from the app.",
     "idk"),
    ("Where is my refund for order BW-204518?",
     "Your refund for BW-204518 was issued on Monday; it reaches your card in 5-7 business days.",
     "Refunds happen."),
    ("The router light is blinking orange.",
     "Orange blinking means no internet: restart the modem, then the router, and wait two minutes.",
     "Please contact support."),
    ("Can I return an unopened smart plug?",
     "Yes, unopened items can be returned within 30 days for a full refund.",
     "Yes, unopened items can be returned within 30 days for a full refund."),  # identical
    ("My camera won't pair with the hub.",
     "Hold the camera's pairing button for five seconds while the hub is in pairing mode.",
     "Try again later."),
]


def single_items() -> list[dict]:
    return [{"item_id": f"bw-{i}", "prompt": chat(q), "output": good if i % 2 == 0 else bad}
            for i, (q, good, bad) in enumerate(SUPPORT)]


def pair_items() -> list[dict]:
    out = []
    for i, (q, good, bad) in enumerate(SUPPORT):
        base, tuned = (bad, good) if i != 2 else (good, bad)  # the tuned model broke item 2
        out.append({"item_id": f"bw-{i}", "prompt": chat(q), "base": base, "tuned": tuned})
    return out


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path):
    from engine.generation.transformers_backend import TransformersBackend

    return TransformersBackend(tiny_model_dir)


# ----------------------------------------------------------------------------- scripted backend
class Scripted:
    """A deterministic stand-in judge: P(A) per pairwise prompt from a rule over the two replies."""

    def __init__(self, rule, digit: int = 3, label: int = 1):
        self.rule, self.digit, self.label = rule, digit, label
        self.prompts: list[list[dict[str, str]]] = []

    def choice_logprobs(self, prompts, choices, batch_size=8):
        self.prompts += prompts
        rows = []
        for p in prompts:
            if choices == ["A", "B"]:
                m = re.search(r"Reply A:\n(.*)\n\nReply B:\n(.*)\n\nWhich", p[-1]["content"], re.S)
                p_a = self.rule(m.group(1), m.group(2))
                rows.append([math.log(p_a), math.log(1 - p_a)])
            else:  # digits: put (almost) all mass on one choice
                hot = self.digit if len(choices) == 5 else self.label
                rows.append([0.0 if c == str(hot) else -50.0 for c in choices])
        return rows

    def generate(self, prompts, max_new_tokens, batch_size, progress=None, label=""):
        return ["Because it answers the question." for _ in prompts]


def helpful(a: str, b: str) -> float:
    """Prefers the longer (more specific) reply, whatever its position."""
    return 0.9 if len(a) > len(b) else 0.1


def test_combine_orders() -> None:
    assert combine_orders(0.8, 0.7) == ("tuned", True)
    assert combine_orders(0.2, 0.1) == ("base", True)
    assert combine_orders(0.8, 0.2) == ("tie", False)  # picked position B, then position A
    assert combine_orders(0.3, 0.9) == ("tie", False)
    assert combine_orders(0.5, 0.5) == ("tie", True)
    assert combine_orders(0.5, 0.9) == ("tie", False)


def test_pairwise_consistent_judge_is_scored_per_item() -> None:
    fake = Scripted(helpful)
    rep = judge_pairwise(fake, pair_items(), PAIR_RUBRIC, batch_size=2)
    assert [r.winner for r in rep.results] == ["tuned", "tuned", "base", "tie", "tuned"]
    assert [r.consistent for r in rep.results] == [True] * 5
    assert [r.identical for r in rep.results] == [False, False, False, True, False]
    assert rep.results[0].p_tuned_by_order == pytest.approx((0.9, 0.9))
    assert (rep.n, rep.tuned_wins, rep.base_wins, rep.ties, rep.n_identical) == (5, 3, 1, 1, 1)
    assert rep.consistency_rate == 1.0 and rep.tuned_win_rate == pytest.approx(3.5 / 5)
    assert rep.results[0].rationale == "Because it answers the question."
    assert rep.results[3].rationale is None
    # two prompts per judged item: base shown first as A, then tuned first; none for the identical one
    assert len(fake.prompts) == 8
    first, second = fake.prompts[0][-1]["content"], fake.prompts[1][-1]["content"]
    assert first.index(SUPPORT[0][2]) < first.index(SUPPORT[0][1])
    assert second.index(SUPPORT[0][1]) < second.index(SUPPORT[0][2])


def test_pairwise_position_bias_is_inconsistent_and_a_tie() -> None:
    rep = judge_pairwise(Scripted(lambda a, b: 0.8), pair_items(), PAIR_RUBRIC)  # always "A"
    judged = [r for r in rep.results if not r.identical]
    assert all(r.winner == "tie" and not r.consistent for r in judged)
    assert judged[0].p_tuned_by_order == pytest.approx((0.2, 0.8))
    assert rep.consistency_rate == 0.0 and rep.ties == 5 and rep.tuned_win_rate == 0.5
    assert rep.counts == {"judged": 4, "consistent": 0, "inconsistent": 4}


def test_pairwise_mixed_consistency_rate() -> None:
    def rule(a: str, b: str) -> float:  # position-biased on the refund item only
        return 0.8 if "BW-204518" in a + b else helpful(a, b)

    rep = judge_pairwise(Scripted(rule), pair_items(), PAIR_RUBRIC)
    assert [r.winner for r in rep.results] == ["tuned", "tie", "base", "tie", "tuned"]
    assert rep.consistency_rate == 0.75 and rep.counts["inconsistent"] == 1


def test_summarize_pairwise_empty_and_all_identical() -> None:
    rep = summarize_pairwise([])
    assert rep.n == 0 and rep.consistency_rate is None and rep.tuned_win_rate is None
    same = [{"item_id": "a", "prompt": "hi", "base": "Hello!", "tuned": "Hello!"}]
    rep = judge_pairwise(Scripted(helpful), same, PAIR_RUBRIC)
    assert rep.consistency_rate is None and rep.n_identical == 1 and rep.results[0].winner == "tie"


# ------------------------------------------------------------------------------ real tiny model
def test_judge_single_on_the_tiny_model(backend) -> None:
    items = single_items()
    a = judge_single(backend, items, RUBRIC, batch_size=2, rationale_tokens=8)
    assert [r.item_id for r in a] == [f"bw-{i}" for i in range(5)]
    for r in a:
        assert isinstance(r, JudgeResult) and 0.0 <= r.score <= 1.0 and 1.0 <= r.rating <= 5.0
        assert sum(r.probs) == pytest.approx(1.0, abs=1e-5) and len(r.probs) == 5
        assert r.score == pytest.approx((r.rating - 1) / 4, abs=1e-5)
        assert isinstance(r.rationale, str)
    again = judge_single(backend, items, RUBRIC, batch_size=2, rationale_tokens=8)
    assert a == again  # deterministic
    one = judge_single(backend, items, RUBRIC, batch_size=1, rationale_tokens=0)
    five = judge_single(backend, items, RUBRIC, batch_size=5, rationale_tokens=0)
    for x, y, z in zip(a, one, five):  # batching changes nothing but float rounding
        assert y.rationale is None
        assert x.score == pytest.approx(y.score, abs=1e-4) == pytest.approx(z.score, abs=1e-4)
    assert judge_single(backend, [], RUBRIC) == []


def test_judge_pairwise_on_the_tiny_model(backend) -> None:
    items = pair_items()
    rep = judge_pairwise(backend, items, PAIR_RUBRIC, batch_size=3, rationale_tokens=8)
    assert rep.n == 5 and rep.n_identical == 1 and rep.tuned_wins + rep.base_wins + rep.ties == 5
    judged = [r for r in rep.results if not r.identical]
    for r in rep.results:
        assert isinstance(r, PairwiseResult) and 0.0 <= r.p_tuned <= 1.0
        winner, consistent = combine_orders(*r.p_tuned_by_order)
        if not r.identical:
            assert (r.winner, r.consistent) == (winner, consistent)
            assert r.p_tuned == pytest.approx(sum(r.p_tuned_by_order) / 2, abs=1e-6)
    assert rep.consistency_rate == pytest.approx(sum(r.consistent for r in judged) / len(judged))
    assert judge_pairwise(backend, items, PAIR_RUBRIC, batch_size=3, rationale_tokens=8) == rep
    for bs in (1, 8):
        other = judge_pairwise(backend, items, PAIR_RUBRIC, batch_size=bs, rationale_tokens=0)
        for x, y in zip(rep.results, other.results):
            assert x.p_tuned_by_order == pytest.approx(y.p_tuned_by_order, abs=1e-4)
            assert x.winner == y.winner and x.consistent == y.consistent
        assert other.consistency_rate == rep.consistency_rate


# ------------------------------------------------------------------- score_model / label_model
SCORE = GraderSpec(type="score_model", range=(1, 10), pass_threshold=7, input=[
    {"role": "system", "content": "You grade Brightwave Home support replies."},
    {"role": "user", "content": "Customer ({{item.channel}}): {{item.question}}\nReply: {{sample.output_text}}"}])
LABEL = GraderSpec(type="label_model", labels=["polite", "neutral", "rude"], passing_labels=["polite", "neutral"],
                   input=[{"role": "developer", "content": "Classify the tone of the reply."},
                          {"role": "user", "content": "Reply: {{sample.output_text}}"}])


def model_items() -> list[dict]:
    return [{"item_id": f"bw-{i}", "prompt": chat(q), "reference": good,
             "meta": {"channel": "chat", "question": q}} for i, (q, good, _) in enumerate(SUPPORT)]


def test_score_model_maps_the_digit_onto_the_range() -> None:
    items = model_items()
    outs = [good for _, good, _ in SUPPORT]
    refs = [it["reference"] for it in items]
    top = grade_batch(SCORE, outs, refs, items, backend=Scripted(helpful, digit=5))
    assert top[0].score == pytest.approx(1.0) and top[0].detail["raw"] == pytest.approx(10.0)
    assert top[0].passed is True
    low = grade_batch(SCORE, outs, refs, items, backend=Scripted(helpful, digit=1))
    assert low[0].score == pytest.approx(0.0) and low[0].detail["raw"] == pytest.approx(1.0)
    assert low[0].passed is False
    mid = grade_batch(SCORE, outs, refs, items, backend=Scripted(helpful, digit=3))
    assert mid[0].detail["raw"] == pytest.approx(5.5) and mid[0].passed is False
    fake = Scripted(helpful)
    grade_detail(SCORE, outs[1], refs[1], items[1], backend=fake)
    (prompt,) = fake.prompts
    assert prompt[1]["content"].startswith(f"Customer (chat): {SUPPORT[1][0]}\nReply: {outs[1]}")
    assert prompt[1]["content"].endswith("Answer with a single digit from 1 (worst) to 5 (best).")


def test_label_model_picks_the_most_probable_label() -> None:
    items = model_items()
    fake = Scripted(helpful, label=3)
    res = grade_batch(LABEL, ["Whatever."], [""], items[:1], backend=fake)
    assert res[0].score == 0.0 and res[0].passed is False and res[0].detail["label"] == "rude"
    assert fake.prompts[0][0]["role"] == "system"  # developer → system for local chat templates
    assert "1. polite\n2. neutral\n3. rude" in fake.prompts[0][-1]["content"]
    res = grade_batch(LABEL, ["Happy to help!"], [""], items[:1], backend=Scripted(helpful, label=2))
    assert res[0].detail["label"] == "neutral" and res[0].passed is True


def test_model_graders_on_the_tiny_model(backend) -> None:
    items = model_items()
    outs = [good for _, good, _ in SUPPORT]
    refs = [it["reference"] for it in items]
    scores = grade_batch(SCORE, outs, refs, items, backend=backend, batch_size=2)
    assert scores == grade_batch(SCORE, outs, refs, items, backend=backend, batch_size=2)
    for r in scores:
        assert 0.0 <= r.score <= 1.0 and 1.0 <= r.detail["raw"] <= 10.0
        assert r.passed == (r.detail["raw"] >= 7)
    labels = grade_batch(LABEL, outs, refs, items, backend=backend, batch_size=5)
    for r in labels:
        assert r.detail["label"] in LABEL.labels and r.score in (0.0, 1.0)
        assert r.passed == (r.detail["label"] in LABEL.passing_labels)
        assert sum(r.detail["probs"]) == pytest.approx(1.0, abs=1e-5)
