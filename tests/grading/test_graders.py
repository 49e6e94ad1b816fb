"""Tests for engine.grading.graders: every offline grader type, OpenAI imports and the spec checks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import sacrebleu
from pydantic import ValidationError
from rouge_score import rouge_scorer

from engine.config import GraderSpec
from engine.errors import StudioError
from engine.grading.graders import (GradeResult, bleu, build_grader, chrf, from_openai, grade,
                                    grade_batch, grade_detail, is_binary, normalize)

FIXTURES = Path(__file__).parent / "fixtures" / "graders"
QUEUE = r"Queue: BILLING-REFUND \| Priority: P[1-3]"
ORDER_JSON = {"order": {"id": "BW-204518", "status": "shipped",
                        "items": [{"sku": "BW-THERM-2", "qty": 1}, {"sku": "BW-HUB-1", "qty": 2}]},
              "action": "track"}
PAIRS = [  # (output, reference): a realistic spread from identical to unrelated
    ("Your refund for order BW-204518 has been approved and will reach your card in 5-7 days.",
     "Your refund for order BW-204518 has been approved and will reach your card in 5-7 days."),
    ("I approved the refund for BW-204518; expect it on your card within a week.",
     "Your refund for order BW-204518 has been approved and will reach your card in 5-7 days."),
    ("Please restart the router by holding the reset button for 10 seconds.",
     "Hold the reset button on the back of the router for ten seconds, then wait for the light."),
    ("Thanks for reaching out!", "Your thermostat firmware update is available in the app."),
]


def item(item_id: str = "it-7", **meta: object) -> dict:
    return {"item_id": item_id, "prompt": [{"role": "user", "content": "x"}], "reference": "",
            "meta": dict(meta)}


# ---------------------------------------------------------------------- exact_match / contains
def test_exact_match_default_normalisation() -> None:
    spec = GraderSpec()
    assert grade(spec, "  Refund\n  approved ", "refund approved") == 1.0
    assert grade(spec, "Refund approved.", "refund approved") == 0.0
    assert grade(spec, "STRASSE", "straße") == 1.0  # casefold, not lower()
    assert grade_detail(spec, "Refund approved", "refund approved") == GradeResult(1.0, True, {})
    assert grade_detail(spec, "Refund denied", "refund approved").passed is False


def test_exact_match_nfkc() -> None:
    spec = GraderSpec(ignore_case=False, ignore_whitespace=False)
    assert grade(spec, "ﬁle", "file") == 1.0  # ligature
    assert grade(spec, "１２３", "123") == 1.0  # full-width digits
    assert grade(spec, "Cafe\u0301", "Café") == 1.0  # combining accent


def test_exact_match_strict_options() -> None:
    spec = GraderSpec(ignore_case=False, ignore_whitespace=False)
    assert grade(spec, "Yes", "yes") == 0.0
    assert grade(spec, "yes ", "yes") == 0.0
    assert grade(GraderSpec(ignore_case=False), " Yes\t", "Yes") == 1.0
    assert grade(GraderSpec(ignore_whitespace=False), "YES", "yes") == 1.0


def test_contains() -> None:
    spec = GraderSpec(type="contains")
    assert grade(spec, "Your order ORD-123   has shipped", "order ord-123 has") == 1.0
    assert grade(spec, "Your order has shipped", "refund") == 0.0
    strict = GraderSpec(type="contains", ignore_case=False)
    assert grade(strict, "Order shipped", "order") == 0.0


def test_contains_empty_reference_only_matches_empty_output() -> None:
    spec = GraderSpec(type="contains")
    assert grade(spec, "anything", "") == 0.0
    assert grade(spec, "   ", "") == 1.0


def test_normalize() -> None:
    assert normalize("  A\u00a0 B\n", GraderSpec()) == "a b"


def test_unknown_type_is_a_studio_error() -> None:
    spec = GraderSpec.model_construct(type="meteor_plus", ignore_case=True, ignore_whitespace=True)
    with pytest.raises(StudioError, match="unknown grader") as info:
        grade(spec, "a", "a")
    assert info.value.where == "eval.grader.type"


def test_non_text_is_a_studio_error() -> None:
    with pytest.raises(StudioError):
        grade(GraderSpec(), None, "a")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- regex
def test_regex_ticket_queue_search_and_fullmatch() -> None:
    search = GraderSpec(type="regex", pattern=QUEUE)
    full = GraderSpec(type="regex", pattern=QUEUE, match="fullmatch")
    good = "Queue: BILLING-REFUND | Priority: P2"
    chatty = "Sure! Routing now.\nQueue: BILLING-REFUND | Priority: P1"
    for out, want_search, want_full in [
        (good, 1.0, 1.0),
        (chatty, 1.0, 0.0),
        ("Queue: BILLING-REFUND | Priority: P4", 0.0, 0.0),  # P4 is not a valid priority
        ("queue: billing-refund | priority: p2", 0.0, 0.0),  # case-sensitive by default
        ("Queue: SHIPPING-DELAY | Priority: P2", 0.0, 0.0),
    ]:
        assert grade(search, out, "ignored") == want_search, out
        assert grade(full, out, "ignored") == want_full, out
    assert grade(GraderSpec(type="regex", pattern="(?i)" + QUEUE), "queue: billing-refund | priority: p2", "") == 1.0
    assert is_binary(search)


def test_regex_pattern_from_the_reference() -> None:
    spec = GraderSpec(type="regex")
    assert grade(spec, "Queue: RETURNS | Priority: P3", r"Queue: RETURNS \| Priority: P[23]") == 1.0
    assert grade(spec, "Queue: RETURNS | Priority: P1", r"Queue: RETURNS \| Priority: P[23]") == 0.0
    with pytest.raises(StudioError, match="reference on item it-9 is not a valid regular expression") as info:
        grade_detail(spec, "Queue: RETURNS", "Queue: RETURNS (P2", item("it-9"))
    assert info.value.where == "eval.grader.pattern"


def test_regex_bad_pattern_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        GraderSpec(type="regex", pattern="Queue: (BILLING")
    assert info.value.errors()[0]["loc"] == ("pattern",)
    assert "not a valid regular expression" in str(info.value)


# ------------------------------------------------------------------------------- json_schema
def test_json_schema_from_a_file_relative_to_the_config() -> None:
    spec = GraderSpec(type="json_schema", json_schema="order_status.schema.json")
    ok = grade_detail(spec, json.dumps(ORDER_JSON), "", base_dir=FIXTURES)
    assert ok == GradeResult(1.0, True, {})
    missing = {"order": {"id": "BW-204518"}, "action": "track"}
    res = grade_detail(spec, json.dumps(missing), "", base_dir=FIXTURES)
    assert res == GradeResult(0.0, False, {"error": "schema", "rule": "required", "at": "/order"})
    bad_qty = json.loads(json.dumps(ORDER_JSON))
    bad_qty["order"]["items"][1]["qty"] = 0
    res = grade_detail(spec, json.dumps(bad_qty), "", base_dir=FIXTURES)
    assert res.detail == {"error": "schema", "rule": "minimum", "at": "/order/items/1/qty"}
    fenced = "```json\n" + json.dumps(ORDER_JSON) + "\n```"  # a chatty model's wrapping is not JSON
    assert grade_detail(spec, fenced, "", base_dir=FIXTURES).detail == {"error": "not_json"}
    with pytest.raises(StudioError, match="cannot read JSON schema file") as info:
        grade_detail(spec, "{}", "", base_dir=FIXTURES.parent)
    assert info.value.where == "eval.grader.json_schema"


def test_json_schema_inline_and_detail_has_no_customer_text() -> None:
    schema = {"type": "object", "required": ["reply"], "properties": {"reply": {"type": "string", "maxLength": 20}}}
    spec = GraderSpec(type="json_schema", json_schema=schema)
    assert grade(spec, '{"reply": "Refund approved"}', "") == 1.0
    secret = "Ana Ruiz, 12 Elm Street, card 4111"
    res = grade_detail(spec, json.dumps({"reply": secret}), "")
    assert res.score == 0.0 and res.detail["rule"] == "maxLength"
    assert "Ana" not in json.dumps(res.detail)
    with pytest.raises(ValidationError, match="not a valid JSON schema"):
        GraderSpec(type="json_schema", json_schema={"type": "objekt"})


# -------------------------------------------------------------------------------- json_field
def test_json_field_against_the_reference_json() -> None:
    spec = GraderSpec(type="json_field", path="order.items.0.sku")
    ref = json.dumps(ORDER_JSON)
    assert grade(spec, json.dumps(ORDER_JSON), ref) == 1.0
    other = json.loads(ref)
    other["order"]["items"][0]["sku"] = "bw-therm-2 "  # case and whitespace are normalised
    assert grade(spec, json.dumps(other), ref) == 1.0
    other["order"]["items"][0]["sku"] = "BW-CAM-1"
    assert grade(spec, json.dumps(other), ref) == 0.0
    del other["order"]["items"]
    assert grade_detail(spec, json.dumps(other), ref).detail == {"error": "missing_field"}
    assert grade_detail(spec, "The order BW-204518 shipped.", ref).detail == {"error": "not_json"}
    last = GraderSpec(type="json_field", path="order.items.-1.qty")
    assert grade(last, json.dumps(ORDER_JSON), ref) == 1.0


def test_json_field_against_text_reference_or_expected_value() -> None:
    status = GraderSpec(type="json_field", path="order.status")
    assert grade(status, json.dumps(ORDER_JSON), "Shipped") == 1.0  # plain text reference
    assert grade(status, json.dumps(ORDER_JSON), "delivered") == 0.0
    qty = GraderSpec(type="json_field", path="order.items.1.qty", expected=2)
    assert grade(qty, json.dumps(ORDER_JSON), "anything") == 1.0
    assert grade(GraderSpec(type="json_field", path="order.items.1.qty", expected=3),
                 json.dumps(ORDER_JSON), "") == 0.0
    flag = GraderSpec(type="json_field", path="escalate", expected=True)
    assert grade(flag, '{"escalate": true}', "") == 1.0
    assert grade(flag, '{"escalate": 1}', "") == 0.0  # a bool is not a number
    none = GraderSpec(type="json_field", path="tracking", expected=None)
    assert grade(none, '{"tracking": null}', '{"tracking": "1Z999"}') == 1.0  # expected null wins


def test_json_field_reference_without_the_field_is_an_error() -> None:
    spec = GraderSpec(type="json_field", path="order.status")
    with pytest.raises(StudioError, match="reference JSON on item it-3 has no field 'order.status'") as info:
        grade_detail(spec, json.dumps(ORDER_JSON), '{"order": {"id": "BW-1"}}', item("it-3"))
    assert info.value.where == "eval.grader.path"


# ------------------------------------------------------------------------- bleu / chrf / rouge
def test_bleu_and_chrf_equal_sacrebleu() -> None:
    for out, ref in PAIRS:
        assert grade(GraderSpec(type="bleu"), out, ref) == pytest.approx(
            min(1.0, sacrebleu.sentence_bleu(out, [ref]).score / 100), abs=1e-12)
        assert grade(GraderSpec(type="chrf"), out, ref) == pytest.approx(
            sacrebleu.sentence_chrf(out, [ref]).score / 100, abs=1e-12)
    scores = [bleu(o, r) for o, r in PAIRS]
    assert scores[0] == 1.0 and scores[0] > scores[1] > 0.0 and scores[3] == 0.0
    assert chrf("", "") == 1.0 and bleu("", "Your order shipped") == 0.0


@pytest.mark.parametrize("kind", ["rouge1", "rouge2", "rougeL"])
def test_rouge_equals_rouge_score(kind: str) -> None:
    for stem in (False, True):
        scorer = rouge_scorer.RougeScorer([kind], use_stemmer=stem)
        spec = GraderSpec(type=kind, use_stemmer=stem)
        for out, ref in PAIRS:
            assert grade(spec, out, ref) == pytest.approx(scorer.score(ref, out)[kind].fmeasure, abs=1e-12)


def test_continuous_scores_pass_by_threshold() -> None:
    out, ref = PAIRS[1]
    raw = grade_detail(GraderSpec(type="rougeL"), out, ref)
    assert raw.passed is None and 0.0 < raw.score < 1.0 and not is_binary(GraderSpec(type="rougeL"))
    assert grade_detail(GraderSpec(type="rougeL", pass_threshold=raw.score), out, ref).passed is True
    assert grade_detail(GraderSpec(type="rougeL", pass_threshold=raw.score + 0.01), out, ref).passed is False


# ------------------------------------------------------------------------------------ python
def test_python_grader_by_path_relative_to_the_config() -> None:
    spec = GraderSpec(type="python", function="brightwave_graders.py:refund_policy")
    it = item(order_id="BW-204518")
    good = "Your refund for BW-204518 is within our 30-day window, so it is approved."
    assert grade_detail(spec, good, "", it, base_dir=FIXTURES) == GradeResult(1.0, None, {})
    assert grade_detail(spec, "Refund approved for BW-204518.", "", it, base_dir=FIXTURES).score == 0.5
    assert grade_detail(spec, "Sorry, no.", "", it, base_dir=FIXTURES).score == 0.0
    strict = GraderSpec(type="python", function="brightwave_graders.py:refund_policy", pass_threshold=1.0)
    assert grade_detail(strict, "Refund approved for BW-204518.", "", it, base_dir=FIXTURES).passed is False
    flag = GraderSpec(type="python", function="brightwave_graders.py:mentions_order_id")
    assert grade_detail(flag, "Order BW-204518 shipped", "", it, base_dir=FIXTURES) == GradeResult(1.0, True, {})
    assert grade_detail(flag, "Your order shipped", "", it, base_dir=FIXTURES).passed is False


def test_python_grader_by_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bw_grading.py").write_text("def short(output, reference, item):\n    return len(output) < 40\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = GraderSpec(type="python", function="bw_grading:short")
    assert grade(spec, "Queue: RETURNS | Priority: P2", "") == 1.0
    assert grade(spec, "Thank you so much for contacting Brightwave Home support today!", "") == 0.0


def test_python_grader_errors_name_the_function_not_the_text() -> None:
    where = "eval.grader.function"
    crash = GraderSpec(type="python", function="brightwave_graders.py:crashes_on_missing_meta")
    with pytest.raises(StudioError) as info:
        grade_detail(crash, "My Nest router keeps dropping", "", item("it-42"), base_dir=FIXTURES)
    msg = str(info.value)
    assert "crashes_on_missing_meta" in msg and "KeyError" in msg and "it-42" in msg
    assert "router_model" not in msg and "Nest" not in msg  # neither the key nor the text leaks
    assert info.value.where == where
    for fn, shown in [("too_generous", "returned 2"), ("says_maybe", "returned str")]:
        spec = GraderSpec(type="python", function=f"brightwave_graders.py:{fn}")
        with pytest.raises(StudioError, match=shown) as info:
            grade_detail(spec, "x", "", item(), base_dir=FIXTURES)
        assert fn in str(info.value) and info.value.where == where
    with pytest.raises(StudioError, match="has no function 'nope'") as info:
        grade_detail(GraderSpec(type="python", function="brightwave_graders.py:nope"), "x", "", base_dir=FIXTURES)
    assert "refund_policy" in (info.value.hint or "") and info.value.where == where
    with pytest.raises(StudioError, match="grader file 'missing.py' not found"):
        grade_detail(GraderSpec(type="python", function="missing.py:f"), "x", "", base_dir=FIXTURES)


def test_python_grader_inline_source_openai_style() -> None:
    source = textwrap.dedent("""
        def grade(sample, item):
            data = sample["output_json"] or {}
            return 1.0 if data.get("queue") == item["queue"] else 0.0
    """)
    spec = GraderSpec(type="python", source=source)
    it = item(queue="BILLING-REFUND")
    assert grade_detail(spec, '{"queue": "BILLING-REFUND"}', "", it).score == 1.0
    assert grade_detail(spec, "BILLING-REFUND", "", it).score == 0.0
    with pytest.raises(StudioError, match="defines no function grade") as info:
        build_grader(GraderSpec(type="python", source="def score(sample, item):\n    return 1\n"))
    assert info.value.where == "eval.grader.source"


# ------------------------------------------------------------------ string_check / similarity
def test_string_check_templates_read_the_item_and_its_meta() -> None:
    it = item(queue="RETURNS", priority=2)
    out = "Queue: RETURNS | Priority: P2"
    spec = GraderSpec(type="string_check", operation="eq",
                      reference="Queue: {{item.queue}} | Priority: P{{ item.meta.priority }}")
    assert grade_detail(spec, out, "", it) == GradeResult(1.0, True, {})
    assert grade_detail(spec, "Queue: RETURNS | Priority: P3", "", it).passed is False
    default = GraderSpec(type="string_check", operation="ilike")  # reference = {{item.reference}}
    assert grade(default, "Sure. " + out.upper(), out) == 1.0
    assert grade(GraderSpec(type="string_check", operation="like"), "Sure. " + out.upper(), out) == 0.0
    assert grade(GraderSpec(type="string_check", operation="ne"), out, out) == 0.0
    missing = GraderSpec(type="string_check", operation="eq", reference="{{item.queue_name}}")
    with pytest.raises(StudioError, match=r"\{\{item.queue_name\}\} is not in the eval item") as info:
        grade_detail(missing, out, "", it)
    assert info.value.where == "eval.grader.reference" and "queue" in (info.value.hint or "")


def test_text_similarity_metrics_and_offline_refusals() -> None:
    out, ref = PAIRS[1]
    fuzzy = GraderSpec(type="text_similarity", evaluation_metric="fuzzy_match", pass_threshold=0.5)
    res = grade_detail(fuzzy, out, ref)
    assert 0.0 < res.score < 1.0 and res.passed is (res.score >= 0.5)
    rouge = GraderSpec(type="text_similarity", evaluation_metric="rouge_l")
    assert grade(rouge, out, ref) == grade(GraderSpec(type="rougeL"), out, ref)
    assert grade(GraderSpec(type="text_similarity", evaluation_metric="bleu"), out, ref) == bleu(out, ref)
    for metric, why in [("cosine", "embedding model"), ("meteor", "WordNet")]:
        with pytest.raises(StudioError, match=f"unknown evaluation_metric '{metric}'") as info:
            grade(GraderSpec(type="text_similarity", evaluation_metric=metric), out, ref)
        assert why in (info.value.hint or "") and "not available offline" in (info.value.hint or "")
        assert info.value.where == "eval.grader.evaluation_metric"


def test_shared_core_with_grpo_rewards() -> None:
    from engine.grading import graders
    from engine.train import grpo_rewards

    assert grpo_rewards.Template is graders.Template
    assert grpo_rewards.load_function is graders.load_function
    assert grpo_rewards.METRICS is graders.METRICS and grpo_rewards.string_check is graders.string_check


# ------------------------------------------------------------------------------ spec checks
def test_spec_rejects_keys_of_other_types_and_missing_keys() -> None:
    with pytest.raises(ValidationError, match="'pattern' does not apply to grader type 'exact_match'"):
        GraderSpec(type="exact_match", pattern="x")
    with pytest.raises(ValidationError, match="'pass_threshold' does not apply to grader type 'regex'"):
        GraderSpec(type="regex", pass_threshold=0.5)
    with pytest.raises(ValidationError, match="grader type 'json_field' needs: path"):
        GraderSpec(type="json_field")
    with pytest.raises(ValidationError, match="exactly one of: function, source"):
        GraderSpec(type="python", function="a.py:f", source="def grade(s, i): return 1")
    with pytest.raises(ValidationError, match="labels must be 2 to 9 distinct labels"):
        GraderSpec(type="label_model", input=[{"role": "user", "content": "x"}], labels=["ok"] * 2,
                   passing_labels=["ok"])
    with pytest.raises(ValidationError, match="passing_labels must all be in labels"):
        GraderSpec(type="label_model", input=[{"role": "user", "content": "x"}], labels=["polite", "rude"],
                   passing_labels=["kind"])
    with pytest.raises(ValidationError, match="list of chat messages"):
        GraderSpec(type="score_model", input="{{sample.output_text}}")
    with pytest.raises(ValidationError, match="extra"):
        GraderSpec(type="bleu", smoothing="exp")
    spec = GraderSpec(type="rougeL", use_stemmer=True, pass_threshold=0.4)
    assert GraderSpec(**spec.model_dump()) == spec  # a dumped spec (eval summary) validates again


def test_model_graders_need_a_judge_backend() -> None:
    spec = GraderSpec(type="score_model", input=[{"role": "user", "content": "Rate: {{sample.output_text}}"}])
    with pytest.raises(StudioError, match="needs a judge model"):
        grade(spec, "Your refund is approved.", "")
    with pytest.raises(StudioError, match="needs a judge model"):
        grade_batch(spec, ["a"], ["b"])


def test_grade_batch_keeps_order_and_checks_lengths() -> None:
    spec = GraderSpec(type="regex", pattern=QUEUE)
    outs = ["Queue: BILLING-REFUND | Priority: P1", "nope", "Queue: BILLING-REFUND | Priority: P3"]
    assert [r.score for r in grade_batch(spec, outs, [""] * 3)] == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        grade_batch(spec, outs, [""])


# ----------------------------------------------------------------------------- OpenAI import
def test_from_openai_realistic_testing_criteria() -> None:
    criteria = json.loads((FIXTURES / "openai_testing_criteria.json").read_text())
    specs = [from_openai(c, where=f"testing_criteria[{i}]") for i, c in enumerate(criteria)]
    assert [s.type for s in specs] == ["string_check", "string_check", "text_similarity", "text_similarity",
                                       "python", "score_model", "label_model"]
    assert specs[0].name == "Queue label is exact" and specs[0].operation == "eq"
    assert specs[2].evaluation_metric == "fuzzy_match" and specs[2].pass_threshold == 0.8
    score, label = specs[5], specs[6]
    assert score.model is None and score.range == (1.0, 10.0) and score.pass_threshold == 7
    assert [m.role for m in score.input] == ["system", "user"]
    assert score.input[1].content == ("Customer message: {{item.customer_message}}\n"
                                      "Reply: {{sample.output_text}}\nHow helpful is the reply?")
    assert label.input[0].role == "developer" and label.passing_labels == ["polite", "neutral"]

    it = item(queue="billing-refund", queue_line="Queue: BILLING-REFUND | Priority: P2")
    out = "Queue: BILLING-REFUND | Priority: P2"
    ref = "Queue: BILLING-REFUND | Priority: P2"
    results = [grade_detail(s, out, ref, it) for s in specs[:5]]
    assert [r.passed for r in results] == [True, True, True, True, True]
    wrong = "Queue: SHIPPING-DELAY | Priority: P5"
    results = [grade_detail(s, wrong, ref, it) for s in specs[:5]]
    assert [r.passed for r in results] == [False, False, False, False, False]


def test_from_openai_errors_name_the_field() -> None:
    with pytest.raises(StudioError, match="OpenAI grader type 'multi' is not supported") as info:
        from_openai({"type": "multi", "graders": {}, "calculate_output": "a"}, where="testing_criteria[3]")
    assert info.value.where == "testing_criteria[3].type"
    with pytest.raises(StudioError, match="unknown key 'operator'") as info:
        from_openai({"type": "string_check", "input": "{{sample.output_text}}", "reference": "x",
                     "operator": "eq"})
    assert info.value.where == "grader.operator" and "operation" in (info.value.hint or "")
    with pytest.raises(StudioError, match="'input_image' is not supported") as info:
        from_openai({"type": "label_model", "labels": ["a", "b"], "passing_labels": ["a"],
                     "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]})
    assert info.value.where == "grader.input[0].content[0]"
    with pytest.raises(StudioError, match="invalid OpenAI string_check grader") as info:
        from_openai({"type": "string_check", "input": "{{sample.output_text}}", "reference": "x",
                     "operation": "regex"})
    assert info.value.where == "grader.operation"
