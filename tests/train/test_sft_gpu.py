"""The GPU path of the SFT recipe and of generation (bf16 on CUDA); skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import EvalSpec, load_config
from engine.eval.run import run_eval
from engine.models.store import import_model
from engine.train.sft import train_sft
from tests.helpers import make_project, refined_dataset


@pytest.mark.gpu
def test_lora_sft_and_eval_on_cuda(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> None:
    import torch
    from safetensors import safe_open

    assert torch.cuda.is_available()
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    dataset = refined_dataset(project, workspace, registry)
    cfg = load_config(project / "configs" / "sft_lora.yaml")
    cfg.train.max_steps = 4
    res = train_sft(cfg, workspace, registry)
    assert registry.get_run(res.run_id)["status"] == "succeeded"
    with safe_open(str(res.adapter_dir / "adapter_model.safetensors"), "pt") as f:
        assert len(list(f.keys())) > 0
    ev = run_eval(EvalSpec(limit=4, generation={"max_new_tokens": 4}), workspace, registry,
                  tenant="default", model_ref=res.run_id, dataset=dataset)
    assert ev.n == 4
