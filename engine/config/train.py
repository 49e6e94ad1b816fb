"""The `train` section: method, adapter, data, LoRA/quantization, preference and GRPO options, GPU
knobs (checkpointing, attention kernel, optimizer, evaluation, logging), and TRL_ARGUMENTS, the
table of which TRL / transformers argument each key sets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

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


class MixSource(Strict):
    """One source of a weighted mixture (`train.datasets`): a refined version or a JSONL file."""

    dataset: str | None = Field(default=None, description="'name' (latest) or 'name@vN'")
    data: str | None = Field(default=None, description="a JSONL file, instead of dataset")
    weight: float = Field(gt=0, description="relative sampling probability (normalised over the list)")

    @model_validator(mode="after")
    def _one_source(self) -> "MixSource":
        if bool(self.dataset) == bool(self.data):
            raise ValueError("each mixture source needs exactly one of 'dataset' or 'data'")
        return self


class EarlyStoppingSpec(Strict):
    """transformers' EarlyStoppingCallback: stop when eval_loss stops improving."""

    patience: int = Field(default=3, ge=1, description="evaluations without improvement before stopping")
    threshold: float = Field(default=0.0, ge=0.0, description="smallest eval_loss drop that counts")


# transformers' OptimizerNames values (TrainingArguments `optim`), listed here so a config is
# checked without importing transformers; tests/test_config.py keeps the two equal.
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
    "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
    "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
    "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit",
    "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
    "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw",
    "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw",
    "apollo_adamw_layerwise", "stable_adamw")
# the optimizers transformers builds from bitsandbytes (CUDA + the bitsandbytes package)
BNB_OPTIMIZERS = ("adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit",
                  "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit",
                  "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop_bnb",
                  "rmsprop_bnb_8bit", "rmsprop_bnb_32bit")


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
    datasets: list[MixSource] | None = Field(
        default=None, min_length=2, description="a weighted mixture of sources, instead of dataset/data")
    mix_stopping_strategy: Literal["first_exhausted", "all_exhausted"] = Field(
        default="first_exhausted", description="datasets.interleave_datasets stopping_strategy")
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
    chat_template: str | None = Field(
        default=None, description="the training chat template: a chat family name (llama3, llama3_1, "
        "qwen2_5, qwen3, mistral, mistral_nemo, mistral_small, gemma2, gemma3, phi3, phi4, chatml) "
        "or a .jinja file with {% generation %} marks; it must render like the model's serving "
        "template, which is what the run ships and serves (docs/training.md)")
    packing: bool = Field(default=False, description="padding-free packing (sft, dpo)")
    save_steps: int | None = Field(default=None, ge=1, description="checkpoint every N steps")
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch")
    # GPU knobs (docs/training.md "GPU knobs")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations in backward")
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] | None = Field(
        default=None, description="attention kernel; none: transformers' default for the model")
    optimizer: str | None = Field(default=None, description="transformers optim name; none: its default")
    max_grad_norm: float = Field(default=1.0, ge=0.0, description="gradient clipping; 0 turns it off")
    eval_steps: int | None = Field(default=None, ge=1, description="evaluate on the val split every N steps")
    load_best_model_at_end: bool = False
    early_stopping: EarlyStoppingSpec | None = None
    logging: Literal["none", "tensorboard"] = "none"

    @model_validator(mode="after")
    def _method_sections(self) -> "TrainSpec":
        if self.method == "grpo" and self.grpo is None:
            raise ValueError("method 'grpo' needs a 'grpo' section with at least one reward")
        if sum(1 for v in (self.dataset, self.data, self.datasets) if v) > 1:
            raise ValueError("set one of 'dataset', 'data' or 'datasets' (a mixture), not several")
        return self

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: str | None) -> str | None:
        if value is not None and value not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {value!r}; transformers' optim names are: "
                             + ", ".join(OPTIMIZERS))
        return value

    @field_validator("eval_steps")
    @classmethod
    def _eval_needs_loss(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("method") == "grpo":
            raise ValueError("eval_steps is not available for method grpo (its evaluation would "
                             "have to generate); remove it")
        return value

    @field_validator("load_best_model_at_end")
    @classmethod
    def _best_needs_eval(cls, value: bool, info: ValidationInfo) -> bool:
        eval_steps, save_steps = info.data.get("eval_steps"), info.data.get("save_steps")
        if value and eval_steps is None:
            raise ValueError("load_best_model_at_end needs train.eval_steps (the best checkpoint is "
                             "picked by eval_loss, measured every eval_steps)")
        if value and save_steps is not None and save_steps % eval_steps:
            raise ValueError(f"with load_best_model_at_end, train.save_steps ({save_steps}) must be a "
                             f"multiple of train.eval_steps ({eval_steps}): the best model is loaded "
                             "from a checkpoint saved at an evaluation step (leave save_steps unset "
                             "to save at every evaluation)")
        return value

    @field_validator("early_stopping")
    @classmethod
    def _stopping_needs_best(cls, value: EarlyStoppingSpec | None,
                             info: ValidationInfo) -> EarlyStoppingSpec | None:
        if value is not None and (info.data.get("eval_steps") is None
                                  or not info.data.get("load_best_model_at_end")):
            raise ValueError("early_stopping needs train.eval_steps and train.load_best_model_at_end: "
                             "true (transformers' EarlyStoppingCallback requires both)")
        return value


# How each `train:` key reaches TRL / transformers: YAML key (dotted below a sub-section) → the
# argument name(s) it sets. common_args() (engine/train/common.py) looks the renamed keys up here;
# the recipes (sft.py, preference.py, reward.py, grpo.py, vlm.py) pass the rest. The same table is
# in docs/configuration.md ("How train keys map to TRL / transformers"); a test keeps them equal.
TRL_ARGUMENTS: dict[str, tuple[str, ...]] = {
    # common_args(): the TrainingArguments every TRL config class shares
    "batch_size": ("per_device_train_batch_size", "per_device_eval_batch_size"),
    "grad_accum": ("gradient_accumulation_steps",),
    "epochs": ("num_train_epochs",),
    "max_steps": ("max_steps",),
    "learning_rate": ("learning_rate",),
    "lr_scheduler": ("lr_scheduler_type",),
    "warmup_ratio": ("warmup_steps",),  # value as is: transformers 5 reads a float < 1 as a ratio
    "weight_decay": ("weight_decay",),
    "save_steps": ("save_strategy", "save_steps"),  # N: "steps" and N; none: "epoch" and 500
    "seed": ("seed", "data_seed"),  # the top-level `seed:` (not under train:); also set_seed()
    "gradient_checkpointing": ("activation_checkpointing", "activation_checkpointing_kwargs"),  # kwargs: use_reentrant False
    "optimizer": ("optim",),  # none: transformers' default (adamw_torch_fused)
    "max_grad_norm": ("max_grad_norm",),
    "eval_steps": ("eval_strategy", "eval_steps"),  # N: "steps" and N; none: "no"
    "load_best_model_at_end": ("load_best_model_at_end", "metric_for_best_model", "greater_is_better"),
    "early_stopping.patience": ("early_stopping_patience",),  # EarlyStoppingCallback
    "early_stopping.threshold": ("early_stopping_threshold",),  # EarlyStoppingCallback
    "logging": ("report_to",),  # tensorboard: event files in <run>/tensorboard/
    # the recipes
    "adapter": ("use_dora", "quantization_config"),  # dora: LoraConfig; qlora: from_pretrained
    "attn_implementation": ("attn_implementation",),  # from_pretrained; none: transformers' default
    "method": ("cpo_alpha",),  # picks the recipe and TRL config class; cpo: 1.0, simpo: 0.0
    "max_seq_len": ("max_length",),  # SFT/DPO/KTO/ORPO/CPO/RewardConfig; grpo: not passed
    "assistant_only_loss": ("assistant_only_loss",),  # SFTConfig; false if the template cannot tell
    "packing": ("packing",),  # SFTConfig; dpo: PackedDPOTrainer instead (no argument)
    "threads": ("torch.set_num_threads",),  # not a TRL argument; none: cores / local processes
    "lora.r": ("r",),  # peft LoraConfig, given to the TRL trainer as peft_config
    "lora.alpha": ("lora_alpha",),
    "lora.dropout": ("lora_dropout",),
    "lora.target_modules": ("target_modules",),  # vlm "all-linear": the language model's layers
    "quant.bits": ("load_in_4bit", "load_in_8bit"),  # BitsAndBytesConfig (qlora): the one for 4 or 8
    "quant.quant_type": ("bnb_4bit_quant_type",),
    "quant.double_quant": ("bnb_4bit_use_double_quant",),
    "preference.beta": ("beta",),
    "preference.loss_type": ("loss_type",),  # none: the method's default; DPOConfig: a one-item list
    "preference.simpo_gamma": ("simpo_gamma",),  # CPOConfig (cpo, simpo)
    "preference.desirable_weight": ("desirable_weight",),  # KTOConfig
    "preference.undesirable_weight": ("undesirable_weight",),  # KTOConfig
    "grpo.num_generations": ("num_generations",),
    "grpo.max_completion_len": ("max_completion_length",),
    "grpo.temperature": ("temperature",),
    "grpo.rewards": ("reward_funcs", "reward_weights"),  # GRPOTrainer functions; GRPOConfig weights
}

# The `train:` keys that set no TRL / transformers argument, and what they do instead. Every key of
# TrainSpec (and of its sub-sections) is in TRL_ARGUMENTS or here (tests/test_config.py).
NO_TRL_ARGUMENT: dict[str, str] = {
    "base_model": "which model store entry the weights come from",
    "dataset": "which refined dataset version the rows come from",
    "data": "which JSONL file the rows come from",
    "parent_run": "start from this run's merged weights",
    "data_format": "how the rows of `data` are read (engine/train/data.py)",
    "datasets": "a weighted mixture of dataset versions or files, mixed by datasets.interleave_datasets",
    "mix_stopping_strategy": "interleave_datasets' stopping_strategy for the `datasets` mixture",
    "preference.max_prompt_len": "prompts are shortened to it before TRL sees them",
    "chat_template": "the training template for assistant-only loss (engine/train/templates.py); "
                     "not SFTConfig's chat_template_path, which would also replace the served template",
}
