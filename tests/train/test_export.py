"""Export: adapter copy and a merged model that generates exactly like base + adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import StudioError
from engine.models.store import import_model
from engine.models.export import export_run
from engine.train.sft import train_sft
from tests.helpers import make_project, refined_dataset


def test_merged_export_matches_adapter(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> None:
    import torch

    from engine.models.loading import load_causal_lm

    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    refined_dataset(project, workspace, registry)
    cfg = load_config(project / "configs" / "sft_lora.yaml")
    cfg.train.max_steps = 3
    cfg.train.learning_rate = 5e-2  # make the adapter matter
    res = train_sft(cfg, workspace, registry)

    merged = export_run(workspace, registry, res.run_id, "default", merge=True)
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["lineage"]["run"] == res.run_id
    assert manifest["lineage"]["base_model"] == "smollm2-135m-instruct"
    assert manifest["lineage"]["dataset"].startswith("brightwave-tickets@v")
    assert "model.safetensors" in manifest["files"]
    ids = torch.tensor([[5, 17, 42, 7, 99]])
    with torch.no_grad():
        a = load_causal_lm(merged)(ids).logits
        b = load_causal_lm(Path(registry.get_model("smollm2-135m-instruct")["path"]), res.adapter_dir,
                           merge=False)(ids).logits
        base = load_causal_lm(Path(registry.get_model("smollm2-135m-instruct")["path"]))(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, base, atol=1e-3)

    adapter = export_run(workspace, registry, res.run_id, "default", merge=False)
    assert (adapter / "adapter_model.safetensors").read_bytes() == \
        (res.adapter_dir / "adapter_model.safetensors").read_bytes()

    with pytest.raises(StudioError, match="unknown run"):
        export_run(workspace, registry, res.run_id, "other-tenant", merge=True)
