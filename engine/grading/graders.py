"""Graders: score one model output against its reference and item, offline, as a score in [0, 1].

Every `GraderSpec` type behind one interface (the types and their keys: docs/graders.md):
`grade_detail` → GradeResult(score, passed, detail), `grade` → the score, `grade_batch` → many
(the only way to run the model graders score_model/label_model, which need a judge backend; see
engine/grading/judge.py). `from_openai` converts an OpenAI grader definition. The shared core —
templates, text-similarity metrics, string_check, loading a function — is also what the GRPO
rewards use (engine/train/grpo_rewards.py). `detail` holds codes and numbers only, never text.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import math
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import GraderSpec
from engine.errors import StudioError
from engine.grading import judge
from engine.grading.result import GradeResult

if TYPE_CHECKING:
    from engine.generation.protocol import GenerationBackend

_WHITESPACE = re.compile(r"\s+")
_VAR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_WORD_OR_PUNCT = re.compile(r"\w+|[^\w\s]")
BINARY_TYPES = frozenset({"exact_match", "contains", "regex", "json_schema", "json_field",
                          "string_check", "label_model"})
MODEL_TYPES = frozenset({"score_model", "label_model"})
DEFAULT_INPUT = "{{sample.output_text}}"
DEFAULT_REFERENCE = "{{item.reference}}"


def normalize(text: str, spec: GraderSpec) -> str:
    """The form both sides are compared in: NFKC always, then case folding and whitespace
    collapsing (runs → one space, ends stripped) when the spec asks for them."""
    text = unicodedata.normalize("NFKC", text)
    if spec.ignore_case:
        text = text.casefold()
    if spec.ignore_whitespace:
        text = _WHITESPACE.sub(" ", text).strip()
    return text


def is_binary(spec: GraderSpec) -> bool:
    """True when the grader only ever scores 0.0 or 1.0 (a python grader may, but is not known to)."""
    return spec.type in BINARY_TYPES


# ------------------------------------------------------------------------------------ templates
class Template:
    """A grader template: literal text with `{{ sample.output_text }}` / `{{ item.a.b }}` slots.

    Substitution only, nothing is evaluated; non-string values render as canonical JSON. `data`
    names what `item` is in error messages (training rows for rewards, eval items here).
    """

    def __init__(self, text: str, where: str, data: str = "the training data"):
        self.text = text
        self.where = where
        self.data = data
        self.parts: list[str | tuple[str, ...]] = []
        pos = 0
        for m in _VAR.finditer(text):
            self.parts.append(text[pos:m.start()])
            self.parts.append(self._parse(m.group(1)))
            pos = m.end()
        self.parts.append(text[pos:])

    def _parse(self, var: str) -> tuple[str, ...]:
        path = tuple(var.split("."))
        if path == ("sample", "output_text") or (len(path) >= 2 and path[0] == "item" and all(path[1:])):
            return path
        raise StudioError(f"unknown template variable {{{{{var}}}}}", where=self.where,
                          hint="use {{sample.output_text}} (the model output) or {{item.<key>}} "
                               f"(a field of {self.data})")

    @property
    def item_columns(self) -> set[str]:
        """Top-level item keys the template reads."""
        return {p[1] for p in self.parts if isinstance(p, tuple) and p[0] == "item"}

    def render(self, output_text: str, item: dict[str, Any]) -> str:
        return "".join(part if isinstance(part, str) else output_text if part[0] == "sample"
                       else _as_text(self._lookup(part, item)) for part in self.parts)

    def _lookup(self, path: tuple[str, ...], item: dict[str, Any]) -> Any:
        value: Any = item
        for depth, key in enumerate(path[1:], start=1):
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                shown = ".".join(path[:depth + 1])
                hint = (f"{self.data} has columns: {', '.join(sorted(item)) or '(none)'}" if depth == 1
                        else "check the path into the nested column")
                raise StudioError(f"template variable {{{{{shown}}}}} is not in {self.data}",
                                  where=self.where, hint=hint)
        if value is None:
            raise StudioError(f"template variable {{{{{'.'.join(path)}}}}} is empty in some rows",
                              where=self.where, hint=f"every row of {self.data} needs a value for it")
        return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


# -------------------------------------------------------------------------------------- metrics
def fuzzy_match(a: str, b: str) -> float:
    """difflib ratio 2*M/T on the raw texts (M matched characters, T all characters)."""
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _sacrebleu(metric: str, hypothesis: str, reference: str) -> float:
    if not hypothesis.strip() or not reference.strip():  # two empty texts agree perfectly
        return 1.0 if not hypothesis.strip() and not reference.strip() else 0.0
    import sacrebleu

    return min(1.0, getattr(sacrebleu, metric)(hypothesis, [reference]).score / 100.0)


def bleu(hypothesis: str, reference: str) -> float:
    """sacrebleu.sentence_bleu with its defaults / 100 (two empty texts score 1)."""
    return _sacrebleu("sentence_bleu", hypothesis, reference)


def chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu.sentence_chrf with its defaults (chrF, beta 2) / 100 (two empty texts score 1)."""
    return _sacrebleu("sentence_chrf", hypothesis, reference)


def gleu(hypothesis: str, reference: str) -> float:
    """nltk sentence GLEU (min of 1-4-gram precision and recall) on word/punctuation tokens."""
    hyp, ref = _WORD_OR_PUNCT.findall(hypothesis), _WORD_OR_PUNCT.findall(reference)
    if not hyp or not ref:
        return 1.0 if not hyp and not ref else 0.0
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([ref], hyp))


@lru_cache(maxsize=32)
def _rouge_scorer(kind: str, use_stemmer: bool) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=use_stemmer)


def rouge(hypothesis: str, reference: str, kind: str = "rougeL", use_stemmer: bool = False) -> float:
    """rouge-score F-measure; kind is rouge1..rouge9 or rougeL."""
    return float(_rouge_scorer(kind, use_stemmer).score(reference, hypothesis)[kind].fmeasure)


METRICS: dict[str, Callable[[str, str], float]] = {  # OpenAI text_similarity evaluation_metric
    "fuzzy_match": fuzzy_match,
    "bleu": bleu,
    "gleu": gleu,
    **{f"rouge_{n}": (lambda a, b, n=n: rouge(a, b, f"rouge{n}")) for n in range(1, 6)},
    "rouge_l": lambda a, b: rouge(a, b, "rougeL"),
}
OFFLINE_REFUSED = {"meteor": "needs the WordNet corpus", "cosine": "needs an embedding model"}


def check_metric(metric: str, where: str) -> Callable[[str, str], float]:
    if metric not in METRICS:
        why = OFFLINE_REFUSED.get(metric)
        hint = f"{metric} {why}, which is not available offline; " if why else ""
        raise StudioError(f"unknown evaluation_metric {metric!r}", where=where,
                          hint=hint + "use one of: " + ", ".join(METRICS))
    return METRICS[metric]


_STRING_OPS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda t, r: t == r, "ne": lambda t, r: t != r,  # like: contains; ilike: ignoring case
    "like": lambda t, r: r in t, "ilike": lambda t, r: r.casefold() in t.casefold()}


def string_check(operation: str, text: str, reference: str) -> float:
    if operation not in _STRING_OPS:
        raise StudioError(f"unknown string_check operation {operation!r}", hint="use eq, ne, like or ilike")
    return float(_STRING_OPS[operation](text, reference))


# -------------------------------------------------------------------------------------- loading
def load_function(ref: str, where: str, resolve_path: Callable[[str], Path] = Path,
                  what: str = "reward") -> Callable[..., Any]:
    """'package.module:fn' (imported) or 'path/to/file.py:fn' (resolved against the config)."""
    target, sep, func_name = ref.rpartition(":")
    if not sep or not target or not func_name:
        raise StudioError(f"{what} function {ref!r} must look like 'module:function' or "
                          "'file.py:function'", where=where)
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(resolve_path(target))
        if not path.is_file():
            raise StudioError(f"{what} file {target!r} not found", where=where,
                              hint="paths are relative to the config file's folder")
        module_name = f"studio_{what}_" + sha256(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise StudioError(f"cannot load {what} file {target!r} as Python", where=where)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # as an import would: dataclasses/pickle inside it work
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise StudioError(f"{what} file {target!r} failed to import ({exc.__class__.__name__}: "
                              f"{exc})", where=where,
                              hint=f"run `python {path.name}` to see the full error") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise StudioError(f"cannot import {what} module {target!r} ({exc.__class__.__name__})",
                              where=where, hint="install the module or give a file path like "
                                                "../scripts/graders.py:fn") from None
    fn = getattr(module, func_name, None)
    if fn is None:
        names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise StudioError(f"{target!r} has no function {func_name!r}", where=where,
                          hint="callables there: " + (", ".join(names) or "(none)"))
    if not callable(fn):
        raise StudioError(f"{target}:{func_name} is not callable", where=where,
                          hint="point at a function")
    return fn


def _source_function(source: str, where: str) -> Callable[..., Any]:
    """`grade` from an OpenAI python grader's source, executed as its own module."""
    namespace: dict[str, Any] = {"__name__": "studio_grader_" + sha256(source.encode()).hexdigest()[:12]}
    try:
        exec(compile(source, f"<{where}>", "exec"), namespace)  # the user's own grader code
    except Exception as exc:
        raise StudioError(f"python grader source failed to load ({exc.__class__.__name__})", where=where,
                          hint="the source must be Python defining grade(sample, item)") from None
    fn = namespace.get("grade")
    if not callable(fn):
        raise StudioError("python grader source defines no function grade(sample, item)", where=where)
    return fn


# ---------------------------------------------------------------------------------------- graders
def _item_context(item: dict[str, Any] | None, reference: str | None) -> dict[str, Any]:
    """What {{item.*}} reads: the item's meta keys, then its own keys, then the reference."""
    item = item or {}
    meta = item["meta"] if isinstance(item.get("meta"), dict) else {}
    return {**meta, **item, **({"reference": reference} if reference is not None else {})}


_NOT_JSON = object()


def _json_or_none(text: str, default: Any = None) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return default


def _item_tag(item: dict[str, Any] | None) -> str:
    return f" on item {item['item_id']}" if item and item.get("item_id") is not None else ""


def _dig(value: Any, path: str) -> tuple[bool, Any]:
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.lstrip("-").isdigit() and -len(value) <= int(key) < len(value):
            value = value[int(key)]
        else:
            return False, None
    return True, value


class Grader:
    """A GraderSpec made ready to score: templates parsed, pattern/schema/function loaded once."""

    def __init__(self, spec: GraderSpec, where: str = "eval.grader", base_dir: Path | None = None):
        self.spec, self.where = spec, where
        t = spec.type
        resolve = (lambda p: (Path(base_dir) / p).resolve()) if base_dir else Path  # noqa: E731
        self.pattern = re.compile(spec.pattern) if spec.pattern is not None else None
        self.validator = self._load_schema(spec.json_schema, resolve) if t == "json_schema" else None
        self.fn: Callable[..., Any] | None = None
        if t == "python":
            self.fn = (load_function(spec.function, f"{where}.function", resolve, what="grader")
                       if spec.function else _source_function(spec.source or "", f"{where}.source"))
        self.metric = (check_metric(spec.evaluation_metric or "", f"{where}.evaluation_metric")
                       if t == "text_similarity" else None)
        plain, data = t in ("string_check", "text_similarity"), "the eval item"
        self.input = (Template(spec.input if isinstance(spec.input, str) else DEFAULT_INPUT,
                               f"{where}.input", data) if plain else None)
        self.reference = (Template(spec.reference or DEFAULT_REFERENCE, f"{where}.reference", data)
                          if plain else None)
        self.messages = [("system" if m.role == "developer" else m.role,
                          Template(m.content, f"{where}.input[{i}].content", data))
                         for i, m in enumerate(spec.input if isinstance(spec.input, list) else [])]

    def _load_schema(self, schema: dict[str, Any] | str | None, resolve: Callable[[str], Path]) -> Any:
        import jsonschema

        where = f"{self.where}.json_schema"
        if isinstance(schema, str):
            try:
                schema = json.loads(Path(resolve(schema)).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise StudioError(f"cannot read JSON schema file {schema!r} ({exc.__class__.__name__})",
                                  where=where, hint="paths are relative to the config's folder") from None
        if not isinstance(schema, dict):
            raise StudioError("a JSON schema must be an object", where=where)
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise StudioError(f"invalid JSON schema ({exc.validator} at "
                              f"{'/'.join(map(str, exc.path)) or '(root)'})", where=where) from None
        return cls(schema)

    # ------------------------------------------------------------------------------------------
    def grade(self, output: str, reference: str, item: dict[str, Any] | None = None) -> GradeResult:
        if not isinstance(output, str) or not isinstance(reference, str):
            raise StudioError("grader inputs must be text", where=self.where,
                              hint="every eval item needs a string reference and a string model output")
        t, spec = self.spec.type, self.spec
        if t in ("exact_match", "contains"):
            out, ref = normalize(output, spec), normalize(reference, spec)
            # contains: an empty reference would be in everything, so it only matches ""
            return self._binary(out == ref if t == "exact_match" or not ref else ref in out)
        if t == "regex":
            return self._regex(output, reference, item)
        if t == "json_schema":
            return self._json_schema(output)
        if t == "json_field":
            return self._json_field(output, reference, item)
        if t in ("bleu", "chrf"):
            return self._continuous((bleu if t == "bleu" else chrf)(output, reference), {})
        if t in ("rouge1", "rouge2", "rougeL"):
            return self._continuous(rouge(output, reference, t, spec.use_stemmer), {})
        if t == "python":
            return self._python(output, reference, item)
        if t in ("string_check", "text_similarity"):
            assert self.input is not None and self.reference is not None
            ctx = _item_context(item, reference)
            text, ref_text = self.input.render(output, ctx), self.reference.render(output, ctx)
            if t == "string_check":
                return self._binary(string_check(spec.operation or "", text, ref_text) == 1.0)
            assert self.metric is not None
            return self._continuous(float(self.metric(text, ref_text)), {})
        if t in MODEL_TYPES:
            return self.grade_batch([output], [reference], [item])[0]  # refused: no judge model
        raise StudioError(f"unknown grader type '{t}'", where=f"{self.where}.type",
                          hint="see docs/graders.md for the grader types")

    def grade_batch(self, outputs: Sequence[str], references: Sequence[str],
                    items: Sequence[dict[str, Any] | None] | None = None, *,
                    backend: "GenerationBackend | None" = None, batch_size: int = 8) -> list[GradeResult]:
        if len(outputs) != len(references) or (items is not None and len(items) != len(outputs)):
            raise ValueError("outputs, references and items must have the same length")
        its: Sequence[dict[str, Any] | None] = items if items is not None else [None] * len(outputs)
        if self.spec.type not in MODEL_TYPES:
            return [self.grade(o, r, i) for o, r, i in zip(outputs, references, its)]
        if backend is None:
            raise StudioError(f"grader type '{self.spec.type}' needs a judge model", where=self.where,
                              hint="set the eval's judge model (a local model store name or run id)")
        prompts = [[{"role": role, "content": tpl.render(o, _item_context(i, r))}
                    for role, tpl in self.messages] for o, r, i in zip(outputs, references, its)]
        if self.spec.type == "score_model":
            return judge.score_model(backend, prompts, self.spec.range, self.spec.pass_threshold,
                                     batch_size=batch_size)
        return judge.label_model(backend, prompts, self.spec.labels or [],
                                 self.spec.passing_labels or [], batch_size=batch_size)

    # ------------------------------------------------------------------------------------------
    def _binary(self, ok: bool, detail: dict[str, Any] | None = None) -> GradeResult:
        return GradeResult(1.0 if ok else 0.0, bool(ok), detail or {})

    def _continuous(self, score: float, detail: dict[str, Any]) -> GradeResult:
        thr = self.spec.pass_threshold
        return GradeResult(score, None if thr is None else score >= thr, detail)

    def _regex(self, output: str, reference: str, item: dict[str, Any] | None) -> GradeResult:
        pattern = self.pattern
        if pattern is None:
            try:
                pattern = re.compile(reference)
            except re.error:
                raise StudioError(f"the reference{_item_tag(item)} is not a valid regular expression",
                                  where=f"{self.where}.pattern",
                                  hint="set grader.pattern, or make each reference a regex") from None
        found = pattern.fullmatch(output) if self.spec.match == "fullmatch" else pattern.search(output)
        return self._binary(found is not None)

    def _json_schema(self, output: str) -> GradeResult:
        value = _json_or_none(output, default=_NOT_JSON)
        if value is _NOT_JSON:
            return self._binary(False, {"error": "not_json"})
        import jsonschema

        err = jsonschema.exceptions.best_match(self.validator.iter_errors(value))
        if err is None:
            return self._binary(True)
        return self._binary(False, {"error": "schema", "rule": str(err.validator),
                                    "at": "/" + "/".join(map(str, err.absolute_path))})

    def _json_field(self, output: str, reference: str, item: dict[str, Any] | None) -> GradeResult:
        path = self.spec.path or ""
        want = self.spec.expected
        if "expected" not in self.spec.model_fields_set:
            want = _json_or_none(reference, default=reference)
            if isinstance(want, (dict, list)):
                found, want = _dig(want, path)
                if not found:
                    raise StudioError(f"the reference JSON{_item_tag(item)} has no field {path!r}",
                                      where=f"{self.where}.path",
                                      hint="fix the path, or give the value as grader.expected")
        value = _json_or_none(output, default=_NOT_JSON)
        if value is _NOT_JSON:
            return self._binary(False, {"error": "not_json"})
        found, got = _dig(value, path)
        if not found:
            return self._binary(False, {"error": "missing_field"})
        return self._binary(self._equal(got, want))

    def _equal(self, got: Any, want: Any) -> bool:
        if isinstance(got, str) and isinstance(want, str):
            return normalize(got, self.spec) == normalize(want, self.spec)
        if isinstance(got, bool) or isinstance(want, bool):
            return type(got) is type(want) and got == want
        return bool(got == want)

    def _python(self, output: str, reference: str, item: dict[str, Any] | None) -> GradeResult:
        spec, fn = self.spec, self.fn
        assert fn is not None
        label = spec.function or "grade (inline source)"
        where = f"{self.where}.{'function' if spec.function else 'source'}"
        try:
            if spec.function:
                value = fn(output, reference, item if item is not None else {})
            else:
                value = fn({"output_text": output, "output_json": _json_or_none(output)},
                           _item_context(item, reference))
        except StudioError:
            raise
        except Exception as exc:
            raise StudioError(f"python grader {label!r} raised {exc.__class__.__name__}{_item_tag(item)}",
                              where=where, hint="call the function on that item yourself to see "
                                                "the full error") from None
        if hasattr(value, "item") and not isinstance(value, (int, float)):
            value = value.item()  # a numpy or torch scalar
        if isinstance(value, bool):
            return self._binary(value)
        if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
            shown = f"{value:g}" if isinstance(value, (int, float)) else type(value).__name__
            raise StudioError(f"python grader {label!r} returned {shown}{_item_tag(item)}, not a "
                              "number in [0, 1] or a bool", where=where,
                              hint="return a float in [0, 1] or a bool")
        return self._continuous(float(value), {})


_GRADERS: dict[tuple[str, str, str], Grader] = {}


def build_grader(spec: GraderSpec, *, where: str = "eval.grader",
                 base_dir: Path | None = None) -> Grader:
    """The ready Grader for a spec (cached per spec, field path and config folder)."""
    key = (spec.model_dump_json() + repr(sorted(spec.model_fields_set)), where, str(base_dir))
    grader = _GRADERS.get(key)
    if grader is None:
        grader = _GRADERS[key] = Grader(spec, where, base_dir)
    return grader


def grade_detail(spec: GraderSpec, output: str, reference: str,
                 item: dict[str, Any] | None = None, *, backend: "GenerationBackend | None" = None,
                 base_dir: Path | None = None, where: str = "eval.grader") -> GradeResult:
    """Score one output. `item` (the eval item: item_id, prompt, reference, meta) feeds python
    graders and {{item.*}} templates; `backend` is the judge model for score_model/label_model;
    `base_dir` is the config's folder, for relative paths."""
    grader = build_grader(spec, where=where, base_dir=base_dir)
    if spec.type in MODEL_TYPES:
        return grader.grade_batch([output], [reference], [item], backend=backend)[0]
    return grader.grade(output, reference, item)


def grade(spec: GraderSpec, output: str, reference: str) -> float:
    """The score of `output` against `reference` under the spec's grader (see grade_detail)."""
    return grade_detail(spec, output, reference).score


def grade_batch(spec: GraderSpec, outputs: Sequence[str], references: Sequence[str],
                items: Sequence[dict[str, Any] | None] | None = None, *,
                backend: "GenerationBackend | None" = None, batch_size: int = 8,
                base_dir: Path | None = None, where: str = "eval.grader") -> list[GradeResult]:
    """Score many outputs in order; model graders (score_model, label_model) run batched on
    `backend` (the judge model), the others one by one."""
    return build_grader(spec, where=where, base_dir=base_dir).grade_batch(
        outputs, references, items, backend=backend, batch_size=batch_size)


# --------------------------------------------------------------------------------- OpenAI import
_OPENAI_KEYS = {
    "string_check": ("input", "reference", "operation"),
    "text_similarity": ("input", "reference", "evaluation_metric", "pass_threshold"),
    "python": ("source", "pass_threshold"),
    "score_model": ("input", "range", "pass_threshold"),
    "label_model": ("input", "labels", "passing_labels"),
}
# Keys OpenAI's definitions carry that mean nothing offline: the hosted model, its sampling
# settings (local judging is greedy), the python sandbox image, and server-side ids.
_OPENAI_DROPPED = frozenset({"model", "sampling_params", "image_tag", "id", "object", "created_at"})


def _openai_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    texts = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text"):
            texts.append(str(part.get("text", "")))
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise StudioError(f"message content of type {kind!r} is not supported", where=f"{where}[{i}]",
                              hint="model graders take text content only (input_text)")
    return "".join(texts)


def from_openai(grader_json: dict[str, Any], *, where: str = "grader") -> GraderSpec:
    """A GraderSpec from an OpenAI grader definition (Evals `testing_criteria` entry or a
    fine-tuning grader): string_check, text_similarity, python, score_model, label_model.

    The hosted `model` and `sampling_params` are dropped (model graders run greedily on the
    eval's local judge model); `multi` graders and image inputs are refused.
    """
    if not isinstance(grader_json, dict):
        raise StudioError("an OpenAI grader definition must be a JSON object", where=where)
    kind = grader_json.get("type")
    if kind not in _OPENAI_KEYS:
        hint = ("split a multi grader into its graders" if kind == "multi" else
                "supported: " + ", ".join(_OPENAI_KEYS))
        raise StudioError(f"OpenAI grader type {kind!r} is not supported", where=f"{where}.type",
                          hint=hint)
    fields: dict[str, Any] = {"type": kind}
    if grader_json.get("name"):
        fields["name"] = str(grader_json["name"])
    for key, value in grader_json.items():
        if key in ("type", "name") or key in _OPENAI_DROPPED:
            continue
        if key not in _OPENAI_KEYS[kind]:
            raise StudioError(f"unknown key {key!r} for an OpenAI {kind} grader", where=f"{where}.{key}",
                              hint="keys: " + ", ".join(("name", *_OPENAI_KEYS[kind])))
        if key == "input" and kind in MODEL_TYPES:
            if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m for m in value):
                raise StudioError("input must be a list of messages with role and content",
                                  where=f"{where}.input")
            value = [{"role": m["role"], "content": _openai_content(m.get("content", ""),
                                                                    f"{where}.input[{i}].content")}
                     for i, m in enumerate(value)]
        fields[key] = value
    try:
        return GraderSpec(**fields)
    except Exception as exc:  # pydantic ValidationError: name the first failing field
        errors = getattr(exc, "errors", lambda: [])()
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise StudioError(f"invalid OpenAI {kind} grader: {first.get('msg')}",
                          where=f"{where}.{loc}" if loc else where) from None
