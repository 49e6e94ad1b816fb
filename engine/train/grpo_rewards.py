"""GRPO reward functions built from `train.grpo.rewards`: Python callables and OpenAI-style graders.

TRL's GRPOTrainer calls every reward as `fn(prompts=..., completions=..., completion_ids=...,
<every other dataset column>=..., trainer_state=..., log_extra=..., log_metric=...)` with one list
entry per completion, and logs `rewards/<fn.__name__>/mean` — so every callable built here has a
unique `__name__` (the spec's `name`, else a default) and returns one float per completion.

Reward types (the grader ones take the shapes customers bring from OpenAI fine-tuning):

  python           `function: "package.module:fn"` (imported) or `"path/to/file.py:fn"` (relative
                   to the config file). Called with TRL's keyword arguments, as above.
  string_check     1.0/0.0 comparing the rendered `input` with the rendered `reference`:
                   eq (equal), ne (not equal), like (input contains reference, case-sensitive),
                   ilike (input contains reference, ignoring case).
  text_similarity  a similarity score in [0, 1] between `input` and `reference`; with
                   `pass_threshold` it becomes 1.0 when score >= threshold, else 0.0. Metrics:
                   fuzzy_match (difflib ratio), bleu (sacrebleu sentence BLEU), gleu (nltk),
                   rouge_1..rouge_5 and rouge_l (rouge-score F1); meteor and cosine need WordNet
                   or an embedding model and are refused.

The grading core — templates, metrics, string_check, loading a function — is shared with the eval
graders and lives in engine/grading/graders.py. Templates: `{{ sample.output_text }}` is the
completion's text (the last assistant message in conversational mode), stripped of surrounding
whitespace; `{{ item.<column> }}` is that row's dataset column, with dotted paths into nested
objects (`{{ item.meta.product }}`). Substitution only — nothing is evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.config import RewardFnSpec
from engine.errors import StudioError
from engine.grading.graders import (METRICS, Template, bleu, check_metric, fuzzy_match, gleu,
                                    load_function, rouge, string_check)

__all__ = ["METRICS", "TRL_KWARGS", "GraderReward", "PythonReward", "RewardFn", "Template", "bleu",
           "build_rewards", "check_columns", "completion_text", "fuzzy_match", "gleu",
           "load_function", "rouge_l", "rouge_n", "string_check"]

# Keyword arguments TRL passes that are not dataset columns (never visible as item.*).
TRL_KWARGS = frozenset({"prompts", "completions", "completion_ids", "trainer_state", "log_extra",
                        "log_metric", "environments"})
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def rouge_n(hypothesis: str, reference: str, n: int) -> float:
    return rouge(hypothesis, reference, f"rouge{n}")


def rouge_l(hypothesis: str, reference: str) -> float:
    return rouge(hypothesis, reference, "rougeL")


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or the last assistant message of a message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        for msg in reversed(completion):
            if isinstance(msg, dict) and msg.get("role") == "assistant":
                content = msg.get("content")
                if isinstance(content, list):  # content blocks: join the text parts
                    return "".join(b.get("text", "") for b in content if isinstance(b, dict))
                return content if isinstance(content, str) else ""
    return ""


def _items(n: int, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-completion dataset rows from TRL's column-wise keyword arguments."""
    columns = {k: v for k, v in kwargs.items() if k not in TRL_KWARGS and isinstance(v, list)}
    return [{k: v[i] for k, v in columns.items() if len(v) == n} for i in range(n)]


# -------------------------------------------------------------------------------- reward callables
class GraderReward:
    """A string_check or text_similarity grader as a TRL reward function."""

    def __init__(self, spec: RewardFnSpec, name: str, where: str):
        self.__name__ = name
        self.spec = spec
        self.where = where
        self.input = Template(spec.input, f"{where}.input")
        self.reference = Template(spec.reference or "", f"{where}.reference")
        if spec.type == "text_similarity":
            self._metric = check_metric(spec.evaluation_metric or "", f"{where}.evaluation_metric")

    @property
    def item_columns(self) -> set[str]:
        return self.input.item_columns | self.reference.item_columns

    def score(self, output_text: str, item: dict[str, Any]) -> float:
        text = self.input.render(output_text, item)
        reference = self.reference.render(output_text, item)
        if self.spec.type == "string_check":
            return string_check(self.spec.operation or "", text, reference)
        value = float(self._metric(text, reference))
        if self.spec.pass_threshold is not None:  # a reward: pass/fail as 1/0
            return 1.0 if value >= self.spec.pass_threshold else 0.0
        return value

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        items = _items(len(completions), kwargs)
        return [self.score(completion_text(c).strip(), item) for c, item in zip(completions, items)]


class PythonReward:
    """A user's Python reward function, named and checked so a bad return value is a clear error."""

    def __init__(self, fn: Callable[..., Any], name: str, where: str):
        self.__name__ = name
        self.fn = fn
        self.where = where
        self.item_columns: set[str] = set()

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        out = self.fn(completions=completions, **kwargs)
        try:
            values = [None if v is None else float(v) for v in out]
        except (TypeError, ValueError):
            raise StudioError(f"reward function {self.__name__!r} must return a list of numbers",
                              where=self.where, hint="return one float (or None) per completion") from None
        if len(values) != len(completions):
            raise StudioError(f"reward function {self.__name__!r} returned {len(values)} values for "
                              f"{len(completions)} completions", where=self.where,
                              hint="return one float (or None) per completion")
        return values


RewardFn = GraderReward | PythonReward


# -------------------------------------------------------------------------------------- loading
def _default_name(spec: RewardFnSpec) -> str:
    if spec.type == "python":
        return (spec.function or "").rpartition(":")[2] or "python"
    if spec.type == "text_similarity":
        return spec.evaluation_metric or "text_similarity"
    return f"string_check_{spec.operation}"


def build_rewards(specs: Iterable[RewardFnSpec], resolve_path: Callable[[str], Path] = Path,
                  field: str = "train.grpo.rewards") -> tuple[list[RewardFn], list[float]]:
    """(reward callables, weights) for GRPOTrainer(reward_funcs=...) and GRPOConfig(reward_weights=...)."""
    specs = list(specs)
    explicit = [s.name for s in specs if s.name]
    for i, spec in enumerate(specs):
        if spec.name and not _NAME.match(spec.name):
            raise StudioError(f"reward name {spec.name!r} may use only letters, digits, '_', '.' and '-'",
                              where=f"{field}[{i}].name", hint="the name becomes the metric rewards/<name>/mean")
        if spec.name and explicit.count(spec.name) > 1:
            raise StudioError(f"two rewards are named {spec.name!r}", where=f"{field}[{i}].name",
                              hint="reward names must be unique: each is logged as rewards/<name>/mean")
    used = set(explicit)
    funcs: list[RewardFn] = []
    for i, spec in enumerate(specs):
        where = f"{field}[{i}]"
        name = spec.name
        if not name:
            base = re.sub(r"[^A-Za-z0-9_.-]", "_", _default_name(spec))
            name, k = base, 2
            while name in used:
                name, k = f"{base}_{k}", k + 1
            used.add(name)
        if spec.type == "python":
            fn = load_function(spec.function or "", f"{where}.function", resolve_path)
            funcs.append(PythonReward(fn, name, where))
        else:
            funcs.append(GraderReward(spec, name, where))
    return funcs, [float(s.weight) for s in specs]


def check_columns(funcs: Sequence[RewardFn], rows: Sequence[dict[str, Any]]) -> None:
    """Refuse to start when a grader template reads a column some training row lacks."""
    present = set.intersection(*(set(r) for r in rows)) if rows else set()
    present -= {"prompt"}
    reserved = sorted(present & TRL_KWARGS)
    if reserved:
        raise StudioError(f"training data column(s) {', '.join(reserved)} clash with the arguments TRL "
                          "passes to reward functions", hint="rename those columns")
    for fn in funcs:
        missing = sorted(fn.item_columns - present)
        if missing:
            raise StudioError(f"template variable {{{{item.{missing[0]}}}}} is not a column of every "
                              "training row", where=fn.where,
                              hint="columns in every row: " + (", ".join(sorted(present)) or "(none)"))
