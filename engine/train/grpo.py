"""GRPO recipe on TRL's GRPOTrainer: online RL against reward functions, readable top to bottom.

Reads prompt rows (a refined dataset version or a JSONL file in any accepted format, see data.py;
a conversation's final assistant turn becomes the `answer` column) and the rewards in
`train.grpo.rewards` (rewards.py: Python functions or OpenAI-style graders). For every prompt the
policy samples `num_generations` completions through the model's serving chat template; rewards
are computed per completion, normalised within each prompt's group and the policy is pushed
towards the better ones. Generation runs in transformers (no vLLM), so it works on CPU.

Writes the run directory like every recipe: config.yaml, metrics.jsonl (loss, reward means per
named reward, completion lengths …), checkpoints/, adapter/ (or model/) and manifest.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.progress import Progress

from engine.config import StudioConfig
from engine.errors import StudioError
from engine.hashing import sha256_text
from engine.registry import Registry
from engine.train import preflight
from engine.train.common import (ProgressCallback, common_args, device_setup, finish_training,
                                 last_logged, load_model_for_training, trainer_callbacks)
from engine.train.data import load_training_data
from engine.train.grpo_rewards import build_rewards, check_columns
from engine.train.run import TrainResult, base_model_row, tracked_run
from engine.workspace import Workspace


def train_grpo(cfg: StudioConfig, ws: Workspace, registry: Registry, *,
               progress: Progress | None = None, run_id: str | None = None,
                force: bool = False) -> TrainResult:
    """Train one GRPO run; the run is registered first and marked finished/failed at the end."""
    import torch  # noqa: F401  (imported before transformers on purpose: thread settings)
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed
    from trl import GRPOConfig, GRPOTrainer

    spec = cfg.train
    assert spec is not None
    grpo = spec.grpo
    if grpo is None:
        raise StudioError("method 'grpo' needs a 'grpo' section with at least one reward", where="train.grpo")

    # Everything that can be wrong with the config or the data fails here, before any work starts.
    model_row = base_model_row(cfg, registry)
    data = load_training_data(spec, registry, cfg.tenant, "prompt", cfg.resolve_path, seed=cfg.seed)
    rewards, weights = build_rewards(grpo.rewards, cfg.resolve_path)
    check_columns(rewards, data.train)
    # TRL batches count completions, not prompts: each optimizer step's completions must hold whole
    # groups of num_generations completions of the same prompt.
    per_step = spec.batch_size * spec.grad_accum
    if per_step % grpo.num_generations:
        raise StudioError(
            f"batch_size × grad_accum ({per_step}) must be a multiple of grpo.num_generations "
            f"({grpo.num_generations})", where="train.batch_size",
            hint="in GRPO the batch counts completions: batch_size = prompts per step × num_generations")

    model_dir = Path(model_row["path"])
    use_cuda = device_setup(spec)
    set_seed(cfg.seed)

    # Prompts are conversations rendered by the model's own (serving) chat template, with the
    # generation prompt appended by TRL: the policy is trained exactly the way it will be served.
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    serving_template = tokenizer.chat_template
    if not serving_template:
        raise StudioError(f"base model {model_row['name']!r} has no chat template",
                          hint="GRPO prompts are conversations; import a chat (instruct) model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = data.train

    with tracked_run(cfg, ws, registry, base_model=model_row, data_info=data.info,
                     run_id=run_id) as run:
        model, peft_config = load_model_for_training(spec, model_dir, use_cuda)
        args = GRPOConfig(
            **common_args(cfg, run.path, use_cuda),
            num_generations=grpo.num_generations,
            max_completion_length=grpo.max_completion_len,
            temperature=grpo.temperature,
            reward_weights=weights,
            use_vllm=False,           # generation in transformers: CPU and single-GPU friendly
            log_completions=False,    # completions are customer-like text: never logged
            shuffle_dataset=True,     # seeded by args.seed / data_seed
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=list(rewards), args=args, processing_class=tokenizer,
            train_dataset=Dataset.from_list(rows), peft_config=peft_config,
            callbacks=[ProgressCallback(progress, run.metrics_path)],
        )
        trainer_callbacks(trainer, spec, run.path)  # printer off, TensorBoard dir, early stopping
        est = preflight.before_training(trainer, spec, use_cuda, force, probe="none")
        t0 = time.monotonic()
        trainer.train(resume_from_checkpoint=run.resume_from)  # None: from the start
        run.metrics["train_seconds"] = round(time.monotonic() - t0, 2)
        run.metrics["preflight"] = preflight.after_training(
            est, run.metrics["train_seconds"], trainer.state.global_step, use_cuda)
        history = trainer.state.log_history
        run.metrics.update({
            "train_examples": len(rows), "adapter": spec.adapter,
            "num_generations": grpo.num_generations, "max_completion_len": grpo.max_completion_len,
            "rewards": {fn.__name__: {"weight": w, "final_mean": last_logged(history, f"rewards/{fn.__name__}/mean")}
                        for fn, w in zip(rewards, weights)},
            "final_reward": last_logged(history, "reward"),
        })
        if data.val:
            run.metrics["val_examples_unused"] = len(data.val)  # GRPO evaluation would need generation
        tokenizer.chat_template = serving_template  # ship the serving template with the weights
        finish_training(trainer, run, save_tokenizer=tokenizer)
        run.metrics["chat_template_sha256"] = sha256_text(serving_template)
    out = run.adapter_dir if run.adapter_dir.is_dir() else run.path / "model"
    return TrainResult(run.run_id, run.path, out, run.metrics)

