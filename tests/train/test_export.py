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


def _bf16_copy(tiny_model_dir: Path, out: Path) -> Path:
    """The tiny model stored in bfloat16 (weights and config), tokenizer files as they are."""
    import shutil

    import torch

    from engine.models.loading import load_causal_lm

    load_causal_lm(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(out, safe_serialization=True)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "chat_template")):
            shutil.copy(f, out / f.name)
    return out


def test_merged_export_keeps_a_bf16_base_dtype(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from engine.models.export import stored_dtype

    base_dir = _bf16_copy(tiny_model_dir, tmp_path / "tiny-bf16")
    assert stored_dtype(base_dir) == "bfloat16" and stored_dtype(tiny_model_dir) == "float32"
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(base_dir), "smollm2-135m-instruct")
    refined_dataset(project, workspace, registry)
    cfg = load_config(project / "configs" / "sft_lora.yaml")
    cfg.train.max_steps = 3
    cfg.train.learning_rate = 5e-2
    res = train_sft(cfg, workspace, registry)

    merged = export_run(workspace, registry, res.run_id, "default", merge=True)
    assert merged.name == "merged"
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["dtype"] == "bfloat16" and manifest["merge_dtype"] == "float32"
    assert manifest["lineage"]["base_dtype"] == "bfloat16"
    with safe_open(str(merged / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    assert json.loads((merged / "config.json").read_text()).get("dtype") == "bfloat16"

    # the expected merge: W (upcast to float32) + scale * B @ A in float32, rounded once to bfloat16
    store_dir = Path(registry.get_model("smollm2-135m-instruct")["path"])
    base = load_file(store_dir / "model.safetensors")
    adapter = load_file(res.adapter_dir / "adapter_model.safetensors")
    adapter_cfg = json.loads((res.adapter_dir / "adapter_config.json").read_text())
    scale = adapter_cfg["lora_alpha"] / adapter_cfg["r"]
    out = load_file(merged / "model.safetensors")
    targets = {k.removeprefix("base_model.model.").removesuffix(".lora_A.weight") + ".weight"
               for k in adapter if k.endswith(".lora_A.weight")}
    assert targets and targets <= set(out)
    for key in targets:
        prefix = "base_model.model." + key.removesuffix(".weight")
        delta = (adapter[prefix + ".lora_B.weight"].float() @ adapter[prefix + ".lora_A.weight"].float()) * scale
        expected = (base[key].float() + delta).to(torch.bfloat16)
        # equal up to float32 summation order: at most one bfloat16 step apart, and nearly all equal
        assert torch.allclose(out[key].float(), expected.float(), rtol=2 ** -7, atol=0), key
        assert (out[key] == expected).float().mean() > 0.99, key
    for key in set(out) - targets:  # weights without an adapter are the base's, bit for bit
        assert torch.equal(out[key], base[key]), key
    assert any(not torch.equal(out[k], base[k]) for k in targets)  # the adapter mattered

    forced = export_run(workspace, registry, res.run_id, "default", merge=True, dtype="float32")
    assert forced.name == "merged-float32" and merged.is_dir()  # the base-dtype export stays
    assert json.loads((forced / "manifest.json").read_text())["dtype"] == "float32"
    out32 = load_file(forced / "model.safetensors")
    assert {t.dtype for t in out32.values()} == {torch.float32}
    for key in targets:  # the float32 export is the float32 merge; rounding it gives the bf16 export
        assert torch.equal(out32[key].to(torch.bfloat16), out[key]), key
    size16, size32 = ((d / "model.safetensors").stat().st_size for d in (merged, forced))
    assert size16 < 0.55 * size32

    with pytest.raises(StudioError, match="applies to merged exports"):
        export_run(workspace, registry, res.run_id, "default", merge=False, dtype="float32")
    with pytest.raises(StudioError, match="unknown export dtype"):
        export_run(workspace, registry, res.run_id, "default", merge=True, dtype="int8")
