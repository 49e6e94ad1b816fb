"""`studio train --dry-run`: the resolved config, the template plan and the mask gate report, no training."""

from __future__ import annotations

from typing import Any

from engine.config import StudioConfig
from engine.errors import StudioError
from engine.models.loading import is_vlm_model
from engine.registry import Registry
from engine.train.data import load_training_data
from engine.train.mask_gate import check_gate, mask_report
from engine.train.run import base_model_row
from engine.train.templates import plan_template


def preview(cfg: StudioConfig, registry: Registry) -> dict[str, Any]:
    from transformers import AutoTokenizer

    model = base_model_row(cfg, registry)
    if is_vlm_model(model["path"]):  # images are validated by the vision recipe before training
        return {"config": cfg.model_dump(mode="json"), "method": cfg.train.method,
                "modality": "vision", "loss_mode": "vision recipe (engine/train/vlm.py)",
                "gate": "passed"}
    if cfg.train.method != "sft":  # preference/GRPO data is rendered by TRL from prompt + replies
        want = {"kto": "unpaired", "grpo": "prompt"}.get(cfg.train.method, "preference")
        data = load_training_data(cfg.train, registry, cfg.tenant, want, cfg.resolve_path, seed=cfg.seed)
        return {"config": cfg.model_dump(mode="json"), "dataset": data.info["ref"],
                "train_examples": len(data.train), "method": cfg.train.method,
                "loss_mode": "method-specific (TRL)", "gate": "passed"}
    data = load_training_data(cfg.train, registry, cfg.tenant, "sft", cfg.resolve_path, seed=cfg.seed)
    convs = [r["messages"] for r in data.train]
    tokenizer = AutoTokenizer.from_pretrained(model["path"], local_files_only=True)
    try:
        plan = plan_template(tokenizer, convs, override=cfg.train.chat_template,
                             resolve_path=cfg.resolve_path)
    except StudioError as exc:  # a refused train.chat_template is the report's answer
        return {"config": cfg.model_dump(mode="json"), "dataset": data.info["ref"],
                "train_examples": len(convs), "loss_mode": "refused", "gate": f"FAILED: {exc}"}
    report: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "dataset": data.info["ref"],
        "train_examples": len(convs),
        "loss_mode": plan.mode,
        "template_note": plan.reason,
        "chat_family": plan.family,
    }
    if plan.mode == "assistant_only" and convs:
        report["mask"] = mask_report(tokenizer, plan.template, tokenizer.chat_template, convs)
        report["loss_token_share"] = report["mask"]["loss_token_share"]
        try:
            check_gate(report["mask"], where="train.chat_template" if cfg.train.chat_template else None)
            report["gate"] = "passed"
        except StudioError as exc:
            report["gate"] = f"FAILED: {exc.what}"
    return report
