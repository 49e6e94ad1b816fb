"""The `train` section: method, adapter, data, LoRA/quantization, preference and GRPO options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.config.base import Strict


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

