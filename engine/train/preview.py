"""`studio train --dry-run`: the resolved config, the template plan and the loss mask, no training."""

from __future__ import annotations

from typing import Any

from engine.config import StudioConfig
from engine.registry import Registry
from engine.train.data import load_training_data
from engine.train.sft import base_model_row
from engine.train.templates import plan_template


def preview(cfg: StudioConfig, registry: Registry) -> dict[str, Any]:
    from transformers import AutoTokenizer

    model = base_model_row(cfg, registry)
    data = load_training_data(cfg.train, registry, cfg.tenant, "sft", cfg.resolve_path)
    convs = [r["messages"] for r in data.train]
    tokenizer = AutoTokenizer.from_pretrained(model["path"], local_files_only=True)
    plan = plan_template(tokenizer, convs)
    report: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "dataset": data.info["ref"],
        "train_examples": len(convs),
        "loss_mode": plan.mode,
        "template_note": plan.reason,
    }
    if plan.mode == "assistant_only" and convs:
        trained = total = 0
        for conv in convs[:200]:
            enc = tokenizer.apply_chat_template(conv, chat_template=plan.template, tokenize=True,
                                                return_dict=True, return_assistant_tokens_mask=True)
            mask = enc["assistant_masks"]
            trained += sum(mask)
            total += len(mask)
        report["loss_token_share"] = round(trained / max(total, 1), 4)
        report["mean_tokens_per_example"] = round(total / min(len(convs), 200), 1)
    return report
