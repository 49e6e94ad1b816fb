"""GRPO rewards: OpenAI-style graders on hand-made completions, Python rewards by module and file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.config import RewardFnSpec
from engine.errors import StudioError
from engine.train.grpo_rewards import bleu, build_rewards, check_columns, fuzzy_match, rouge_l, rouge_n

ROOT = Path(__file__).resolve().parents[2]
ANSWER = "Queue: RETURNS | Priority: P2"


def conv(text: str) -> list[dict[str, str]]:
    """A completion as TRL passes it in conversational mode."""
    return [{"role": "assistant", "content": text}]


def call(spec: dict, completions: list, **columns: list) -> list[float]:
    (fn,), weights = build_rewards([RewardFnSpec(**spec)])
    # what GRPOTrainer passes besides the dataset columns
    extra = {"prompts": [[{"role": "user", "content": "x"}]] * len(completions),
             "completion_ids": [[1]] * len(completions), "trainer_state": None,
             "log_extra": lambda *a: None, "log_metric": lambda *a: None}
    return fn(completions=completions, **extra, **columns)


def check(op: str, completions: list[str], reference: str = "{{item.answer}}") -> list[float]:
    spec = {"type": "string_check", "operation": op, "reference": reference}
    return call(spec, [conv(c) for c in completions], answer=[ANSWER] * len(completions))


def test_string_check_operations() -> None:
    outs = [ANSWER, "queue: returns | priority: p2", "Sure! " + ANSWER + " Thanks", "Queue: SALES"]
    assert check("eq", outs) == [1.0, 0.0, 0.0, 0.0]
    assert check("ne", outs) == [0.0, 1.0, 1.0, 1.0]
    assert check("like", outs) == [1.0, 0.0, 1.0, 0.0]
    assert check("ilike", outs) == [1.0, 1.0, 1.0, 0.0]


def test_string_check_uses_the_last_assistant_message_and_strips_it() -> None:
    completion = [{"role": "assistant", "content": "thinking"}, {"role": "assistant", "content": f"\n{ANSWER}\n"}]
    spec = {"type": "string_check", "operation": "eq", "reference": "{{ item.answer }}"}
    assert call(spec, [completion], answer=[ANSWER]) == [1.0]
    assert call(spec, [ANSWER + " "], answer=[ANSWER]) == [1.0]  # plain-text (non-chat) completions


def test_templates_render_literals_and_nested_columns() -> None:
    spec = {"type": "string_check", "operation": "eq", "input": "[{{sample.output_text}}]",
            "reference": "[Queue: {{item.meta.queue}} | Priority: P{{item.meta.level}}]"}
    assert call(spec, [conv(ANSWER)], meta=[{"queue": "RETURNS", "level": 2}]) == [1.0]


def test_fuzzy_match_scores_order_by_closeness() -> None:
    spec = {"type": "text_similarity", "evaluation_metric": "fuzzy_match", "reference": "{{item.answer}}"}
    outs = [ANSWER, "Queue: RETURNS | Priority: P1", "Queue: SHIPPING-DELAY | Priority: P1",
            "I'm sorry to hear that, let me help."]
    scores = call(spec, [conv(o) for o in outs], answer=[ANSWER] * 4)
    assert scores[0] == 1.0
    assert scores[0] > scores[1] > scores[2] > scores[3] >= 0.0
    assert fuzzy_match("", "") == 1.0 and fuzzy_match("abc", "") == 0.0


def test_pass_threshold_turns_scores_into_pass_fail() -> None:
    spec = {"type": "text_similarity", "evaluation_metric": "fuzzy_match", "reference": "{{item.answer}}",
            "pass_threshold": 0.9}
    outs = [ANSWER, "Queue: RETURNS | Priority: P1", "something else entirely"]
    assert call(spec, [conv(o) for o in outs], answer=[ANSWER] * 3) == [1.0, 1.0, 0.0]


def test_bleu_and_rouge_are_sane() -> None:
    ref = "the parcel with my thermostat is delayed again"
    assert bleu(ref, ref) == pytest.approx(1.0)
    assert 0.0 < bleu("the parcel with my thermostat is late", ref) < 1.0
    assert bleu("completely unrelated words", ref) == 0.0
    assert rouge_n(ref.upper(), ref, 1) == pytest.approx(1.0)  # ROUGE ignores case
    assert rouge_n("parcel delayed", ref, 1) == pytest.approx(2 * (1.0 * 2 / 8) / (1.0 + 2 / 8))
    assert rouge_n("parcel delayed", ref, 2) == 0.0
    assert rouge_l("my thermostat delayed", ref) == pytest.approx(2 * 1.0 * (3 / 8) / (1.0 + 3 / 8))
    for metric in ("bleu", "gleu", "rouge_1", "rouge_4", "rouge_l"):
        spec = {"type": "text_similarity", "evaluation_metric": metric, "reference": "{{item.answer}}"}
        assert call(spec, [conv(ANSWER)], answer=[ANSWER]) == [pytest.approx(1.0)]
    assert rouge_n(ANSWER, ANSWER, 5) == 0.0  # 4 tokens have no 5-grams (as in rouge-score)


def test_names_and_weights() -> None:
    specs = [RewardFnSpec(type="string_check", operation="eq", reference="{{item.answer}}"),
             RewardFnSpec(type="string_check", operation="eq", reference="{{item.answer}}", weight=0.5),
             RewardFnSpec(type="text_similarity", evaluation_metric="rouge_l", reference="x", name="sim"),
             RewardFnSpec(type="python", function=str(ROOT / "scripts" / "rewards_example.py") + ":format_reward")]
    funcs, weights = build_rewards(specs)
    assert [f.__name__ for f in funcs] == ["string_check_eq", "string_check_eq_2", "sim", "format_reward"]
    assert weights == [1.0, 0.5, 1.0, 1.0]
    with pytest.raises(StudioError, match="two rewards are named 'sim'") as info:
        build_rewards([specs[2], specs[2]])
    assert info.value.where == "train.grpo.rewards[0].name"


def test_python_reward_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "configs").mkdir(parents=True)
    (project / "rewards").mkdir()
    (project / "rewards" / "mine.py").write_text(textwrap.dedent("""
        def length_penalty(completions, answer, **kwargs):
            return [1.0 if c[-1]["content"] == a else -0.5 for c, a in zip(completions, answer)]
    """))
    resolve = lambda p: (project / "configs" / p).resolve()  # noqa: E731  (like StudioConfig.resolve_path)
    (fn,), _ = build_rewards([RewardFnSpec(type="python", function="../rewards/mine.py:length_penalty")], resolve)
    assert fn.__name__ == "length_penalty"
    assert fn(completions=[conv(ANSWER), conv("no")], answer=[ANSWER, ANSWER], prompts=[None, None]) == [1.0, -0.5]


def test_python_reward_from_a_module(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "brightwave_rewards.py").write_text(
        "def always_one(completions, **kwargs):\n    return [1] * len(completions)\nNOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (fn,), _ = build_rewards([RewardFnSpec(type="python", function="brightwave_rewards:always_one", name="one")])
    assert fn.__name__ == "one"
    assert fn(completions=["a", "b"]) == [1.0, 1.0]
    with pytest.raises(StudioError, match="is not callable") as info:
        build_rewards([RewardFnSpec(type="python", function="brightwave_rewards:NOT_CALLABLE")])
    assert info.value.where == "train.grpo.rewards[0].function"


def test_python_reward_errors(tmp_path: Path) -> None:
    example = str(ROOT / "scripts" / "rewards_example.py")
    ok = RewardFnSpec(type="string_check", operation="eq", reference="x")
    with pytest.raises(StudioError, match="has no function 'nope'") as info:
        build_rewards([ok, RewardFnSpec(type="python", function=example + ":nope")])
    assert info.value.where == "train.grpo.rewards[1].function"
    assert "format_reward" in (info.value.hint or "")
    with pytest.raises(StudioError, match="not found"):
        build_rewards([RewardFnSpec(type="python", function=str(tmp_path / "missing.py") + ":f")])
    with pytest.raises(StudioError, match="cannot import reward module 'no_such_module_xyz'"):
        build_rewards([RewardFnSpec(type="python", function="no_such_module_xyz:f")])
    with pytest.raises(StudioError, match="must look like"):
        build_rewards([RewardFnSpec(type="python", function="just_a_name")])
    bad = tmp_path / "bad.py"
    bad.write_text("def wrong(completions, **kw):\n    return 'not a list of numbers'\n")
    (fn,), _ = build_rewards([RewardFnSpec(type="python", function=f"{bad}:wrong")])
    with pytest.raises(StudioError, match="must return a list of numbers"):
        fn(completions=["a"])


def test_unknown_template_variables() -> None:
    with pytest.raises(StudioError, match=r"unknown template variable \{\{sample.output\}\}") as info:
        build_rewards([RewardFnSpec(type="string_check", operation="eq", input="{{sample.output}}", reference="x")])
    assert info.value.where == "train.grpo.rewards[0].input"
    with pytest.raises(StudioError, match="unknown template variable"):
        build_rewards([RewardFnSpec(type="string_check", operation="eq", reference="{{answer}}")])
    # an item column the data lacks: named before training, with the columns that exist
    funcs, _ = build_rewards([RewardFnSpec(type="string_check", operation="eq", reference="{{item.anwser}}")])
    rows = [{"prompt": [], "answer": "a", "queue": "q"}, {"prompt": [], "answer": "b", "queue": "r"}]
    with pytest.raises(StudioError, match=r"\{\{item.anwser\}\}") as info:
        check_columns(funcs, rows)
    assert "answer, queue" in (info.value.hint or "")
    # … and at call time, too
    with pytest.raises(StudioError, match=r"\{\{item.anwser\}\} is not in the training data") as info:
        funcs[0](completions=[conv("a")], answer=["a"], queue=["q"])
    assert "answer, queue" in (info.value.hint or "")


def test_unknown_metric_is_an_error() -> None:
    with pytest.raises(StudioError, match="unknown evaluation_metric 'cosine'") as info:
        build_rewards([RewardFnSpec(type="text_similarity", evaluation_metric="cosine", reference="x")])
    assert "fuzzy_match" in (info.value.hint or "")
    assert info.value.where == "train.grpo.rewards[0].evaluation_metric"


def test_example_format_reward() -> None:
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("rewards_example", ROOT / "scripts" / "rewards_example.py")
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    outs = [conv(ANSWER), conv("Queue: SALES-INQUIRY | Priority: P3\n"), conv("Queue: returns | Priority: P2"),
            conv(ANSWER + "\nAnything else?"), conv("Priority: P4")]
    assert mod.format_reward(outs) == [1.0, 1.0, 0.0, 0.0, 0.0]
