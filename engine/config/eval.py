"""The `eval` section (generation, graders, suites of tasks) and the `gate` section."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from engine.config.base import Strict
from engine.config.serve import VllmSpec  # eval's vLLM options (backend: vllm)


# Per grader type, the keys (besides type and name) that mean something for it.
_GRADER_KEYS: dict[str, tuple[str, ...]] = {
    "exact_match": ("ignore_case", "ignore_whitespace"),
    "contains": ("ignore_case", "ignore_whitespace"),
    "regex": ("pattern", "match"),
    "json_schema": ("json_schema",),
    "json_field": ("path", "expected", "ignore_case", "ignore_whitespace"),
    "bleu": ("pass_threshold",),
    "chrf": ("pass_threshold",),
    "rouge1": ("use_stemmer", "pass_threshold"),
    "rouge2": ("use_stemmer", "pass_threshold"),
    "rougeL": ("use_stemmer", "pass_threshold"),
    "python": ("function", "source", "pass_threshold"),
    "string_check": ("operation", "input", "reference"),
    "text_similarity": ("evaluation_metric", "input", "reference", "pass_threshold"),
    "score_model": ("input", "range", "model", "pass_threshold"),
    "label_model": ("input", "labels", "passing_labels", "model"),
}


class GraderMessage(Strict):
    """One chat message of a model grader's prompt; `content` may hold {{sample.*}}/{{item.*}} slots."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class GraderSpec(Strict):
    """How one model output is scored (engine/grading/graders.py; keys per type in docs/graders.md)."""

    type: Literal["exact_match", "contains", "regex", "json_schema", "json_field", "bleu", "chrf",
                  "rouge1", "rouge2", "rougeL", "python", "string_check", "text_similarity",
                  "score_model", "label_model"] = "exact_match"
    name: str | None = Field(default=None, description="label in reports")
    ignore_case: bool = Field(default=True, description="exact_match/contains/json_field: casefold")
    ignore_whitespace: bool = Field(default=True, description="exact_match/contains/json_field: "
                                    "collapse whitespace runs, strip the ends")
    pattern: str | None = Field(default=None, description="regex: the pattern (default: the item's "
                                "reference is the pattern)")
    match: Literal["search", "fullmatch"] = Field(default="search", description="regex: anywhere in "
                                                  "the output, or the whole output")
    json_schema: dict[str, Any] | str | None = Field(
        default=None, description="json_schema: the schema inline, or a .json file (config-relative)")
    path: str | None = Field(default=None, description="json_field: dotted path, e.g. order.items.0.sku")
    expected: Any = Field(default=None, description="json_field: the value the field must equal "
                          "(default: the same field of the reference JSON, or the reference text)")
    use_stemmer: bool = Field(default=False, description="rouge*: Porter-stem tokens")
    function: str | None = Field(default=None, description="python: 'module:fn' or 'file.py:fn' "
                                 "(config-relative), called as fn(output, reference, item)")
    source: str | None = Field(default=None, description="python: inline code defining "
                               "grade(sample, item) (OpenAI python grader)")
    operation: Literal["eq", "ne", "like", "ilike"] | None = Field(default=None,
                                                                    description="string_check")
    input: str | list[GraderMessage] | None = Field(
        default=None, description="string_check/text_similarity: input template (default "
        "{{sample.output_text}}); score_model/label_model: the grader's chat messages")
    reference: str | None = Field(default=None, description="string_check/text_similarity: "
                                  "reference template (default {{item.reference}})")
    evaluation_metric: Literal["fuzzy_match", "bleu", "gleu", "meteor", "cosine", "rouge_1",
                               "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l"] | None = None
    pass_threshold: float | None = Field(default=None, description="continuous graders: passed "
                                         "when score >= threshold (score_model: in `range` units)")
    range: tuple[float, float] = Field(default=(0.0, 1.0), description="score_model: score range")
    labels: list[str] | None = Field(default=None, description="label_model: 2-9 labels")
    passing_labels: list[str] | None = Field(default=None, description="label_model: labels that pass")
    model: str | None = Field(default=None, description="score_model/label_model: local judge model "
                              "(store name or run id); default: the eval's judge model")

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return v

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, v: dict[str, Any] | str | None) -> dict[str, Any] | str | None:
        if isinstance(v, dict):
            # lazy: jsonschema is only needed by configs with a json_schema grader (start-up time)
            import jsonschema

            try:
                jsonschema.validators.validator_for(v).check_schema(v)
            except jsonschema.SchemaError as exc:
                where = "/".join(str(p) for p in exc.path) or "(root)"
                raise ValueError(f"not a valid JSON schema at {where}: {exc.message}") from None
        return v

    @model_validator(mode="after")
    def _fields_for_type(self) -> "GraderSpec":
        t = self.type
        for key in type(self).model_fields:  # a key set away from its default that t ignores
            if key in ("type", "name") or key in _GRADER_KEYS[t] or key not in self.model_fields_set:
                continue
            if getattr(self, key) != type(self).model_fields[key].default:
                raise ValueError(f"'{key}' does not apply to grader type '{t}' (it takes: "
                                 f"{', '.join(_GRADER_KEYS[t]) or 'no other keys'})")
        need = {"json_schema": ["json_schema"], "json_field": ["path"],
                "string_check": ["operation"], "text_similarity": ["evaluation_metric"],
                "score_model": ["input"], "label_model": ["input", "labels", "passing_labels"]}
        missing = [k for k in need.get(t, []) if getattr(self, k) in (None, "", [])]
        if missing:
            raise ValueError(f"grader type '{t}' needs: {', '.join(missing)}")
        if t == "python" and (self.function is None) == (self.source is None):
            raise ValueError("grader type 'python' needs exactly one of: function, source")
        if t in ("string_check", "text_similarity") and isinstance(self.input, list):
            raise ValueError(f"grader type '{t}' takes a template string as input, not messages")
        if t in ("score_model", "label_model") and not isinstance(self.input, list):
            raise ValueError(f"grader type '{t}' takes its input as a list of chat messages")
        if t == "score_model" and not self.range[0] < self.range[1]:
            raise ValueError("range must be [low, high] with low < high")
        if t == "label_model":
            labels, passing = self.labels or [], self.passing_labels or []
            if not 2 <= len(labels) <= 9 or len(set(labels)) != len(labels):
                raise ValueError("labels must be 2 to 9 distinct labels")
            if not set(passing) <= set(labels):
                raise ValueError("passing_labels must all be in labels")
        return self


class GenerationSpec(Strict):
    max_new_tokens: int = Field(default=64, ge=1)
    batch_size: int = Field(default=8, ge=1, description="prompts per generate call (does not "
                            "change greedy outputs, so it is not part of the cache key)")
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0: greedy (deterministic); "
                               "> 0: sampled with `seed`")
    seed: int = Field(default=0, ge=0, description="torch seed for sampled generation")


class EvalSpec(Strict):
    models: list[str] | None = Field(default=None, description="model names or run ids (standalone)")
    dataset: str | None = Field(default=None, description="'name' (latest) or 'name@vN'")
    split: Literal["eval", "val", "train"] = "eval"
    limit: int | None = Field(default=None, ge=1)
    slice_key: str | None = Field(default=None, description="record meta key to report per slice")
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    grader: GraderSpec = Field(default_factory=GraderSpec)
    cache: bool = Field(default=True, description="reuse generations cached in the tenant's "
                        "cache/generations.sqlite for the same model, prompt and settings")
    suite: SuiteSpec | None = Field(default=None, description="several tasks, each its own eval "
                                    "(engine/eval/suite.py); the keys above are their defaults")
    backend: Literal["transformers", "vllm"] = Field(
        default="transformers", description="generation backend: in-process transformers, or a vLLM "
        "server (its own venv) started for the eval and stopped after it")
    vllm: VllmSpec = Field(default_factory=VllmSpec, description="vLLM options when backend: vllm")


class LmEvalTaskSpec(Strict):
    """A suite task run by lm-eval-harness in-process (engine/eval/lm_eval_task.py)."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task or group names (built-in, "
                             "e.g. arc_easy, or defined by a YAML in include_path)")
    include_path: str | None = Field(default=None, description="a folder of task YAMLs "
                                     "(config-relative)")
    dataset_dir: str | None = Field(default=None, description="a folder of staged datasets "
                                    "(config-relative): lm-eval runs in it, so a dataset_path "
                                    "'owner/name' loads <dataset_dir>/owner/name")
    num_fewshot: int | None = Field(default=None, ge=0, description="default: each task's own")
    metric: str | None = Field(default=None, description="the per-sample metric that is the item "
                               "score; default: each task's first metric")
    filter: str | None = Field(default=None, description="the lm-eval filter whose samples are "
                               "scored; default: each task's first")
    apply_chat_template: bool = Field(default=False, description="format prompts with the "
                                      "model's chat template")

    @field_validator("tasks")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", t)]
        if bad:
            raise ValueError(f"not an lm-eval task name: {bad[0]!r}")
        if len(set(v)) != len(v):
            raise ValueError("task names must be unique")
        return v

    @field_validator("include_path", "dataset_dir")
    @classmethod
    def _not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("path is empty")
        return v


class TaskSpec(Strict):
    """One task of an eval suite: where its items come from, how they are prompted and graded."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="unique in the suite")
    dataset: str | None = Field(default=None, description="'name@vN' (or 'name': latest); "
                                "default: eval.dataset")
    split: Literal["eval", "val", "train"] | None = Field(default=None, description="default: eval.split")
    path: str | None = Field(default=None, description="a JSONL file (config-relative) or "
                             "'builtin:guard', instead of a dataset split")
    limit: int | None = Field(default=None, ge=1, description="default: eval.limit")
    system: str | None = Field(default=None, description="Jinja template of a system message that "
                               "replaces the item's own")
    template: str | None = Field(default=None, description="Jinja template of the user message "
                                 "({{item.input}}, {{item.<field>}}); the prompt becomes system + it")
    generation: GenerationSpec | None = Field(default=None, description="keys set here override "
                                              "eval.generation")
    graders: list[GraderSpec] = Field(default_factory=list, description="the first one gives the "
                                      "task's score; default: [eval.grader]")
    slice_keys: list[str] = Field(default_factory=list, description="item meta keys to report per "
                                  "slice; default: [eval.slice_key]")
    guard: bool = Field(default=False, description="a regression guard: must not get worse")
    lm_eval: LmEvalTaskSpec | None = Field(default=None, description="run lm-eval-harness tasks "
                                           "instead of items, prompts and graders")

    @field_validator("system", "template")
    @classmethod
    def _template_parses(cls, v: str | None) -> str | None:
        if v is not None:
            # lazy: jinja2 is only needed by configs with task templates (start-up time)
            from jinja2 import TemplateSyntaxError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            try:
                ImmutableSandboxedEnvironment().parse(v)
            except TemplateSyntaxError as exc:
                raise ValueError(f"not a valid Jinja template (template line {exc.lineno}: "
                                 f"{exc.message})") from None
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "TaskSpec":
        if self.path is not None and (self.dataset is not None or self.split is not None):
            raise ValueError("give either path or dataset/split, not both")
        if self.path is not None and not self.path.strip():
            raise ValueError("path is empty")
        if self.lm_eval is not None:
            clash = [k for k in ("path", "dataset", "split", "system", "template")
                     if getattr(self, k) is not None] + (["graders"] if self.graders else [])
            if clash:
                raise ValueError(f"lm_eval takes its items, prompts and metrics from lm-eval "
                                 f"tasks: remove {', '.join(clash)} (or drop lm_eval)")
        return self


class SuiteSpec(Strict):
    """Several eval tasks run for every model: one eval directory per (model, task)."""

    name: str | None = Field(default=None, description="label in summaries")
    tasks: list[TaskSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "SuiteSpec":
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique (repeated: {', '.join(dupes)})")
        return self


EvalSpec.model_rebuild()  # `suite` refers to SuiteSpec, defined after EvalSpec


class JudgeGateSpec(Strict):
    """The pairwise judge of the diff (engine/eval/judged.py): a local model compares base and
    tuned outputs item by item, in both orders; optionally gated on the tuned win rate."""

    model: str = Field(min_length=1, description="judge model: store name or run id")
    rubric: str | None = Field(default=None, min_length=1, description="what a better reply is; "
                               "default: the support rubric of the refine's judge (no 1-5 scale)")
    min_win_rate: float | None = Field(default=None, ge=0.0, le=1.0, description="gate: the lower "
                                       "bound of the 95% Wilson interval of the tuned win rate "
                                       "must be at least this; default: report only")
    rationale_tokens: int = Field(default=48, ge=0, le=512, description="length bound of the "
                                  "judge's one-sentence rationale per item; 0: none")


class GateSpec(Strict):
    alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    require: Literal["better", "not_worse", "none"] = "better"
    margin: float = Field(default=0.02, ge=0.0, lt=1.0, description="non-inferiority margin")
    per_slice: bool = Field(default=False, description="every slice must be non-inferior too")
    guard_margin: float = Field(default=0.15, ge=0.0, lt=1.0,
                                description="non-inferiority margin of guard tasks (not_worse)")
    judge: JudgeGateSpec | None = Field(default=None, description="pairwise judge in the diff "
                                        "step (off by default)")
