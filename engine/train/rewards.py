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
                   `pass_threshold` it becomes 1.0 when score >= threshold, else 0.0. Metrics
                   (offline, pure Python, defined here rather than by any service):
                     fuzzy_match  difflib.SequenceMatcher(autojunk=False).ratio() on the raw
                                  texts: 2*M/T, M = matched characters, T = total characters.
                     bleu         sentence BLEU-4: geometric mean of clipped n-gram precisions
                                  (n = 1..4; add-one smoothing for n > 1, Lin & Och 2004) times
                                  the brevity penalty; case-sensitive word/punctuation tokens.
                     gleu         sentence GLEU (Wu et al. 2016): min(precision, recall) over all
                                  1..4-grams together.
                     rouge_1..5   ROUGE-N F1 on lower-cased alphanumeric tokens (a text with
                                  fewer than N tokens has no N-grams and scores 0, as in
                                  Google's rouge-score).
                     rouge_l      ROUGE-L F1 (longest common token subsequence), same tokens.
                   (meteor and cosine need WordNet or an embedding model and are not offered.)

Templates: `{{ sample.output_text }}` is the completion's text (the last assistant message in
conversational mode), stripped of surrounding whitespace; `{{ item.<column> }}` is that row's
dataset column, with dotted paths into nested objects (`{{ item.meta.product }}`). Substitution
only — nothing is evaluated. Non-string values are rendered as JSON.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.config import RewardFnSpec
from engine.errors import StudioError

# Keyword arguments TRL passes that are not dataset columns (never visible as item.*).
TRL_KWARGS = frozenset({"prompts", "completions", "completion_ids", "trainer_state", "log_extra",
                        "log_metric", "environments"})
_VAR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_WORD_OR_PUNCT = re.compile(r"\w+|[^\w\s]")
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


# ------------------------------------------------------------------------------------ templates
class Template:
    """A grader template: literal text with `{{ sample.output_text }}` / `{{ item.a.b }}` slots."""

    def __init__(self, text: str, where: str):
        self.text = text
        self.where = where
        self.parts: list[str | tuple[str, ...]] = []
        pos = 0
        for m in _VAR.finditer(text):
            self.parts.append(text[pos:m.start()])
            self.parts.append(self._parse(m.group(1)))
            pos = m.end()
        self.parts.append(text[pos:])

    def _parse(self, var: str) -> tuple[str, ...]:
        path = tuple(var.split("."))
        if path == ("sample", "output_text"):
            return path
        if len(path) >= 2 and path[0] == "item" and all(path[1:]):
            return path
        raise StudioError(f"unknown template variable {{{{{var}}}}}", where=self.where,
                          hint="use {{sample.output_text}} (the completion) or {{item.<column>}} "
                               "(a column of the training data)")

    @property
    def item_columns(self) -> set[str]:
        """Top-level dataset columns the template reads."""
        return {p[1] for p in self.parts if isinstance(p, tuple) and p[0] == "item"}

    def render(self, output_text: str, item: dict[str, Any]) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif part[0] == "sample":
                out.append(output_text)
            else:
                out.append(_as_text(self._lookup(part, item)))
        return "".join(out)

    def _lookup(self, path: tuple[str, ...], item: dict[str, Any]) -> Any:
        value: Any = item
        for depth, key in enumerate(path[1:], start=1):
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                shown = ".".join(path[:depth + 1])
                if depth == 1:
                    columns = ", ".join(sorted(item)) or "(none)"
                    hint = f"the training data has columns: {columns}"
                else:
                    hint = "check the path into the nested column"
                raise StudioError(f"template variable {{{{{shown}}}}} is not in the training data",
                                  where=self.where, hint=hint)
        if value is None:
            raise StudioError(f"template variable {{{{{'.'.join(path)}}}}} is empty in some rows",
                              where=self.where, hint="every training row needs a value for it")
        return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


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


# -------------------------------------------------------------------------------------- metrics
def fuzzy_match(a: str, b: str) -> float:
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(hypothesis: str, reference: str, max_n: int = 4) -> float:
    hyp, ref = _WORD_OR_PUNCT.findall(hypothesis), _WORD_OR_PUNCT.findall(reference)
    if not hyp or not ref:
        return 1.0 if not hyp and not ref else 0.0
    log_sum = 0.0
    for n in range(1, max_n + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        matches, total = sum((h & r).values()), max(len(hyp) - n + 1, 0)
        if n == 1:
            if matches == 0:
                return 0.0
            log_sum += math.log(matches / total)
        else:
            log_sum += math.log((matches + 1) / (total + 1))
    penalty = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return penalty * math.exp(log_sum / max_n)


def gleu(hypothesis: str, reference: str, max_n: int = 4) -> float:
    hyp, ref = _WORD_OR_PUNCT.findall(hypothesis), _WORD_OR_PUNCT.findall(reference)
    if not hyp or not ref:
        return 1.0 if not hyp and not ref else 0.0
    h: Counter[tuple[str, ...]] = Counter()
    r: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_n + 1):
        h.update(_ngrams(hyp, n))
        r.update(_ngrams(ref, n))
    matches = sum((h & r).values())
    return min(matches / sum(h.values()), matches / sum(r.values()))


def _f1(matches: int, hyp_total: int, ref_total: int) -> float:
    if matches == 0 or hyp_total == 0 or ref_total == 0:
        return 0.0
    p, r = matches / hyp_total, matches / ref_total
    return 2 * p * r / (p + r)


def rouge_n(hypothesis: str, reference: str, n: int) -> float:
    hyp, ref = _ROUGE_TOKEN.findall(hypothesis.lower()), _ROUGE_TOKEN.findall(reference.lower())
    h, r = _ngrams(hyp, n), _ngrams(ref, n)
    return _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))


def rouge_l(hypothesis: str, reference: str) -> float:
    hyp, ref = _ROUGE_TOKEN.findall(hypothesis.lower()), _ROUGE_TOKEN.findall(reference.lower())
    prev = [0] * (len(ref) + 1)  # longest common subsequence, one DP row at a time
    for tok in hyp:
        cur = [0]
        for j, other in enumerate(ref, 1):
            cur.append(prev[j - 1] + 1 if tok == other else max(prev[j], cur[j - 1]))
        prev = cur
    return _f1(prev[-1], len(hyp), len(ref))


METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_match,
    "bleu": bleu,
    "gleu": gleu,
    **{f"rouge_{n}": (lambda a, b, n=n: rouge_n(a, b, n)) for n in range(1, 6)},
    "rouge_l": rouge_l,
}


def string_check(operation: str, text: str, reference: str) -> float:
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    if operation == "ilike":
        return float(reference.casefold() in text.casefold())
    raise StudioError(f"unknown string_check operation {operation!r}", hint="use eq, ne, like or ilike")


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
            metric = spec.evaluation_metric or ""
            if metric not in METRICS:
                hint = ("meteor and cosine need WordNet or an embedding model, which are not offline; "
                        if metric in ("meteor", "cosine") else "")
                raise StudioError(f"unknown evaluation_metric {metric!r}", where=f"{where}.evaluation_metric",
                                  hint=hint + "use one of: " + ", ".join(METRICS))
            self._metric = METRICS[metric]

    @property
    def item_columns(self) -> set[str]:
        return self.input.item_columns | self.reference.item_columns

    def score(self, output_text: str, item: dict[str, Any]) -> float:
        text = self.input.render(output_text, item)
        reference = self.reference.render(output_text, item)
        if self.spec.type == "string_check":
            return string_check(self.spec.operation or "", text, reference)
        value = float(self._metric(text, reference))
        if self.spec.pass_threshold is not None:
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
def load_function(ref: str, where: str, resolve_path: Callable[[str], Path] = Path) -> Callable[..., Any]:
    """'package.module:fn' (imported) or 'path/to/file.py:fn' (resolved against the config)."""
    target, sep, func_name = ref.rpartition(":")
    if not sep or not target or not func_name:
        raise StudioError(f"reward function {ref!r} must look like 'module:function' or 'file.py:function'",
                          where=where)
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(resolve_path(target))
        if not path.is_file():
            raise StudioError(f"reward file {target!r} not found", where=where,
                              hint="paths are relative to the config file's folder")
        module_name = "studio_reward_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise StudioError(f"cannot load reward file {target!r} as Python", where=where)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # as an import would: dataclasses/pickle inside it work
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise StudioError(f"reward file {target!r} failed to import ({exc.__class__.__name__}: {exc})",
                              where=where, hint=f"run `python {path.name}` to see the full error") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise StudioError(f"cannot import reward module {target!r} ({exc.__class__.__name__})", where=where,
                              hint="install the module or give a file path like ../scripts/rewards.py:fn") from None
    fn = getattr(module, func_name, None)
    if fn is None:
        names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise StudioError(f"{target!r} has no function {func_name!r}", where=where,
                          hint="callables there: " + (", ".join(names) or "(none)"))
    if not callable(fn):
        raise StudioError(f"{target}:{func_name} is not callable", where=where,
                          hint="point at a function taking (completions, **kwargs)")
    return fn


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
