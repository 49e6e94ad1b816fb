"""Preference recipes on TRL: DPO, KTO (thumbs up/down), ORPO, CPO and SimPO, readable top to bottom.

  dpo    trl.DPOTrainer on chosen/rejected pairs; the reference model is the base with the adapter
         switched off (LoRA/DoRA/QLoRA) or a frozen copy (full fine-tuning)
  kto    trl.KTOTrainer on unpaired thumbs-up/down rows — the shape real feedback logs have (a pair
         file also works: each pair gives one up and one down)
  orpo   trl.experimental ORPOTrainer: SFT + odds-ratio preference loss, no reference model
  cpo    trl.experimental CPOTrainer: contrastive preference loss + behaviour cloning, no reference
  simpo  CPOTrainer with loss_type "simpo", cpo_alpha 0 and a target margin (simpo_gamma)

Conversational rows are rendered by TRL with the tokenizer's own (serving) chat template, so the
model learns in exactly the format it is served with. Writes the run directory like sft.py:
config.yaml, metrics.jsonl, checkpoints/, adapter/ (or model/) and manifest.json.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from rich.progress import Progress

from engine.config import StudioConfig
from engine.errors import StudioError
from engine.hashing import sha256_text
from engine.registry import Registry
from engine.train import preflight
from engine.train.common import (ProgressCallback, common_args, device_setup, finish_training,
                                 load_model_for_training, trainer_callbacks)
from engine.train.data import load_training_data
from engine.train.dpo_packing import PackedDPOTrainer
from engine.train.run import TrainResult, base_model_row, tracked_run
from engine.workspace import Workspace

# method -> TRL loss types it accepts (first one is the default). ORPO has a single loss.
# DPO's "exo_pair" is left out: it needs label smoothing, which the config does not expose.
LOSS_TYPES: dict[str, tuple[str, ...]] = {
    "dpo": ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "aot",
            "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm", "sft"),
    "kto": ("kto", "apo_zero_unpaired"),
    "orpo": (),
    "cpo": ("sigmoid", "hinge", "ipo", "simpo", "alphapo"),
    "simpo": ("simpo",),
}


def train_preference(cfg: StudioConfig, ws: Workspace, registry: Registry, *,
                     progress: Progress | None = None, run_id: str | None = None,
                force: bool = False) -> TrainResult:
    """Train one preference run; the run is registered first and marked finished/failed at the end."""
    import torch  # noqa: F401  (imported before transformers on purpose: thread settings)
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed

    spec = cfg.train
    assert spec is not None
    method = spec.method
    if method not in LOSS_TYPES:
        raise StudioError(f"method {method!r} is not a preference method",
                          where="train.method", hint="use one of: " + ", ".join(LOSS_TYPES))
    pref = spec.preference
    loss_type = _loss_type(method, pref.loss_type)
    if spec.packing and method != "dpo":  # packing: DPO only (engine/train/dpo_packing.py)
        raise StudioError(f"packing is not available for method {method!r}", where="train.packing",
                          hint="set train.packing: false (padding-free packing exists for sft and dpo)")
    if method == "kto" and spec.batch_size < 2:
        raise StudioError("KTO needs train.batch_size of at least 2", where="train.batch_size",
                          hint="KTO estimates its KL term from the other rows of the same batch")
    if pref.max_prompt_len is not None and pref.max_prompt_len >= spec.max_seq_len:
        raise StudioError("max_prompt_len must be smaller than train.max_seq_len",
                          where="train.preference.max_prompt_len", hint="leave room for the reply")
    model_row = base_model_row(cfg, registry)
    want = "unpaired" if method == "kto" else "preference"
    data = load_training_data(spec, registry, cfg.tenant, want, cfg.resolve_path, seed=cfg.seed)
    model_dir = Path(model_row["path"])
    use_cuda = device_setup(spec)
    set_seed(cfg.seed)

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    serving_template = tokenizer.chat_template
    if not serving_template:
        raise StudioError(f"base model {model_row['name']!r} has no chat template",
                          hint="preference data is conversational; import a chat (instruct) model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows, val_rows = data.train, data.val
    shortened = 0
    if pref.max_prompt_len is not None:
        rows, n_train = _fit_prompts(rows, tokenizer, pref.max_prompt_len)
        val_rows, n_val = _fit_prompts(val_rows, tokenizer, pref.max_prompt_len)
        shortened = n_train + n_val
    # a prompt that fills max_seq_len leaves no reply to learn from: TRL would drop it (DPO, KTO) or
    # train on an empty reply (ORPO, CPO, SimPO); leave it out here and count it instead
    rows, dropped = _drop_too_long(rows, tokenizer, spec.max_seq_len)
    val_rows, _ = _drop_too_long(val_rows, tokenizer, spec.max_seq_len)
    if not rows:
        raise StudioError(f"every prompt is at least train.max_seq_len ({spec.max_seq_len}) tokens long",
                          where="train.max_seq_len",
                          hint="raise max_seq_len, or set preference.max_prompt_len to shorten prompts")
    if method == "kto":  # KTO reads rows in order (its KL term pairs neighbours): mix ups and downs
        rows = _shuffled(rows, cfg.seed)
        val_rows = _shuffled(val_rows, cfg.seed)

    with tracked_run(cfg, ws, registry, base_model=model_row, data_info=data.info,
                     run_id=run_id) as run:
        model, peft_config = load_model_for_training(spec, model_dir, use_cuda)
        base = common_args(cfg, run.path, use_cuda)
        if method == "dpo":
            from trl import DPOConfig, DPOTrainer

            trainer_cls: Any = PackedDPOTrainer if spec.packing else DPOTrainer  # packing
            args: Any = DPOConfig(**base, max_length=spec.max_seq_len, beta=pref.beta,
                                  loss_type=[loss_type])
        elif method == "kto":
            from trl import KTOConfig, KTOTrainer

            trainer_cls = KTOTrainer
            args = KTOConfig(**base, max_length=spec.max_seq_len, beta=pref.beta, loss_type=loss_type,
                             desirable_weight=pref.desirable_weight,
                             undesirable_weight=pref.undesirable_weight)
        elif method == "orpo":
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

            trainer_cls = ORPOTrainer
            args = ORPOConfig(**base, max_length=spec.max_seq_len, beta=pref.beta,
                              remove_unused_columns=False)  # its collator needs every column
        else:  # cpo, simpo: SimPO is CPO's "simpo" loss without the behaviour-cloning term
            from trl.experimental.cpo import CPOConfig, CPOTrainer

            trainer_cls = CPOTrainer
            args = CPOConfig(**base, max_length=spec.max_seq_len, beta=pref.beta, loss_type=loss_type,
                             simpo_gamma=pref.simpo_gamma,  # used by the "simpo" loss only
                             cpo_alpha=0.0 if method == "simpo" else 1.0,  # weight of the SFT term
                             remove_unused_columns=False)  # its collator needs every column
        trainer = trainer_cls(
            model=model, args=args, processing_class=tokenizer,
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
            peft_config=peft_config,
            callbacks=[ProgressCallback(progress, run.metrics_path)],
        )
        trainer_callbacks(trainer, spec, run.path)  # printer off, TensorBoard dir, early stopping
        est = preflight.before_training(trainer, spec, use_cuda, force, probe="step")
        t0 = time.monotonic()
        trainer.train(resume_from_checkpoint=run.resume_from)  # None: from the start
        run.metrics["train_seconds"] = round(time.monotonic() - t0, 2)
        run.metrics["preflight"] = preflight.after_training(
            est, run.metrics["train_seconds"], trainer.state.global_step, use_cuda)
        run.metrics.update({"train_examples": len(rows), "adapter": spec.adapter,
                            "beta": pref.beta, "loss_type": loss_type,
                            "prompts_shortened": shortened, "dropped_too_long": dropped})
        if method == "kto":
            ups = sum(1 for r in rows if r["label"])
            run.metrics.update({"desirable_examples": ups, "undesirable_examples": len(rows) - ups,
                                "desirable_weight": pref.desirable_weight,
                                "undesirable_weight": pref.undesirable_weight})
        if loss_type in ("simpo", "alphapo"):
            run.metrics["simpo_gamma"] = pref.simpo_gamma
        if val_rows:
            run.metrics["val_loss"] = round(float(trainer.evaluate()["eval_loss"]), 6)
        finish_training(trainer, run, save_tokenizer=tokenizer)  # with the serving template, unchanged
        run.metrics["chat_template_sha256"] = sha256_text(serving_template)
    out = run.adapter_dir if run.adapter_dir.is_dir() else run.path / "model"
    return TrainResult(run.run_id, run.path, out, run.metrics)


def _loss_type(method: str, requested: str | None) -> str:
    """The TRL loss type for `method`: the configured one if the method accepts it, else its default."""
    allowed = LOSS_TYPES[method]
    if requested is None:
        return allowed[0] if allowed else "orpo"
    if requested not in allowed:
        hint = ("ORPO has a single loss; remove preference.loss_type" if not allowed
                else "use one of: " + ", ".join(allowed))
        raise StudioError(f"loss type {requested!r} is not available for method {method!r}",
                          where="train.preference.loss_type", hint=hint)
    return requested


def _shuffled(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    out = list(rows)
    random.Random(seed).shuffle(out)
    return out


# ------------------------------------------------------------------------------ prompt length
def _prompt_tokens(tokenizer: Any, prompt: list[dict[str, str]]) -> int:
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _drop_too_long(rows: list[dict[str, Any]], tokenizer: Any,
                   max_len: int) -> tuple[list[dict[str, Any]], int]:
    """Rows whose rendered prompt leaves room for at least one reply token, and how many did not."""
    if not rows:
        return rows, 0
    texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
             for r in rows]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    kept = [r for r, i in zip(rows, ids) if len(i) < max_len]
    return kept, len(rows) - len(kept)


def _fit_prompts(rows: list[dict[str, Any]], tokenizer: Any,
                 limit: int) -> tuple[list[dict[str, Any]], int]:
    """Shorten prompts to `limit` tokens (rendered): drop the oldest turns, then cut the last message.

    System messages and the final message are kept; the final message keeps its beginning.
    Returns the rows and how many prompts were shortened.
    """
    out, shortened = [], 0
    for row in rows:
        prompt = row["prompt"]
        if _prompt_tokens(tokenizer, prompt) <= limit:
            out.append(row)
            continue
        shortened += 1
        system = [m for m in prompt[:-1] if m["role"] == "system"]
        middle = [m for m in prompt[:-1] if m["role"] != "system"]
        while middle and _prompt_tokens(tokenizer, system + middle + prompt[-1:]) > limit:
            middle = middle[1:]
        kept, last = system + middle, dict(prompt[-1])
        if _prompt_tokens(tokenizer, kept + [last]) > limit:
            last["content"] = _cut(tokenizer, kept, last, limit)
        out.append({**row, "prompt": kept + [last]})
    return out, shortened


def _cut(tokenizer: Any, kept: list[dict[str, str]], last: dict[str, str], limit: int) -> str:
    """The beginning of `last`'s content that fits after `kept` within `limit` prompt tokens."""
    overhead = _prompt_tokens(tokenizer, kept + [{**last, "content": ""}])
    if overhead >= limit:
        raise StudioError(f"preference.max_prompt_len ({limit}) does not fit even the system message",
                          where="train.preference.max_prompt_len", hint="raise it, or leave it unset")
    ids = tokenizer(last["content"], add_special_tokens=False)["input_ids"]
    for budget in range(limit - overhead, 0, -1):  # re-tokenized text can merge differently: check
        text = tokenizer.decode(ids[:budget])
        if _prompt_tokens(tokenizer, kept + [{**last, "content": text}]) <= limit:
            return text
    return ""
