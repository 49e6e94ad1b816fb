"""`studio train --dry-run`: the resolved config, the template plan and the loss mask, no training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import StudioConfig
from engine.errors import StudioError
from engine.registry import Registry
from engine.train.common import read_conversations
from engine.train.templates import plan_template


def preview(cfg: StudioConfig, registry: Registry, base_model: str | None,
            dataset: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    model = registry.get_model(base_model or "")
    if model is None:
        raise StudioError(f"unknown base model {base_model!r}", hint="see `studio models list`")
    convs = read_conversations(Path(dataset["path"]) / "train.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(model["path"], local_files_only=True)
    plan = plan_template(tokenizer, convs)
    report: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "dataset": f"{dataset['name']}@v{dataset['version']}",
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
