"""Run manifests: what a run was made from (config, data, model, code, packages, hardware, determinism).

`environment_section()` and `run_sections(...)` are merged into runs/<id>/manifest.json by
engine/train/run.py (`tracked_run`) when a run succeeds. Together with the keys tracked_run
writes itself (config, config_sha256, seed, dataset files, base model hashes, outputs, metrics)
a manifest holds everything `studio reproduce` (engine/repro/reproduce.py) needs to rebuild the
run and to tell whether anything it depends on has changed since:

  config / config_sha256     the resolved config (every default filled in)
  dataset                    ref, sha256 of the version, sha256 of every file in it (or the file)
  base_model                 name, manifest sha256 (of every weight file), source sha256
  tokenizer                  sha256 of each tokenizer file of the base model, chat-template sha256
  seed, determinism          seeds, torch deterministic algorithms, cuDNN/TF32 flags, threads, env
  lockfile / packages        every installed distribution and its version, sorted
  git, project_git           commit + dirty flag of the engine checkout and of the config's folder
  hardware                   CPU model, cores, RAM, GPU model/driver/CUDA when present
  metrics, trajectory        final metrics; metrics.jsonl (per-step loss, grad norm, lr) + sha256
  outputs, weights           sha256 of every output file; per-tensor sha256 of each .safetensors
Hashes only: a manifest never holds customer text.
"""

from __future__ import annotations

import json
import os
import platform
import struct
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import engine
from engine.hashing import sha256_file, sha256_json, sha256_text

if TYPE_CHECKING:
    from engine.config import StudioConfig

KEY_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers",
                "safetensors", "pydantic", "expert-studio")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "added_tokens.json")
DETERMINISM_ENV = ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS", "CUDA_LAUNCH_BLOCKING")


def package_versions() -> dict[str, str]:
    """Every installed distribution and its version (a lockfile of the environment)."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[name.lower()] = dist.version
    return dict(sorted(out.items()))


def git_state(start: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout containing `start` (default: the engine's source)."""
    where = start or Path(engine.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=where, capture_output=True, text=True, timeout=10,
                                    check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _gpu_driver() -> str | None:
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return res.stdout.strip().splitlines()[0] if res.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "system": platform.system(),
                            "python": platform.python_version(), "cpu_count": os.cpu_count(),
                            "ram_bytes": _ram_bytes()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["gpu_memory_bytes"] = [torch.cuda.get_device_properties(i).total_memory
                                        for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
            info["cudnn"] = torch.backends.cudnn.version()
            info["gpu_driver"] = _gpu_driver()
    except ImportError:  # pragma: no cover
        pass
    return info


def environment_section() -> dict[str, Any]:
    versions = package_versions()
    return {
        "engine_version": engine.__version__,
        "packages": {k: versions.get(k) for k in KEY_PACKAGES},
        "lockfile": versions,
        "git": git_state(),
        "hardware": hardware(),
    }


# ------------------------------------------------------------------------------ run-specific parts
def determinism(seed: int | None = None) -> dict[str, Any]:
    """The settings that decide whether two runs of one config give the same bits."""
    out: dict[str, Any] = {"seed": seed, "data_seed": seed,
                           "env": {k: os.environ.get(k) for k in DETERMINISM_ENV}}
    try:
        import torch

        out.update({
            "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "torch_deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_enabled": torch.backends.cudnn.enabled,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
        })
    except ImportError:  # pragma: no cover
        pass
    return out


def tokenizer_hashes(model_dir: str | Path | None) -> dict[str, Any]:
    """sha256 of each tokenizer file of a model directory, and of its chat template."""
    files: dict[str, str] = {}
    template: str | None = None
    if model_dir is not None and Path(model_dir).is_dir():
        root = Path(model_dir)
        for name in TOKENIZER_FILES:
            if (root / name).is_file():
                files[name] = sha256_file(root / name)
        if (root / "chat_template.jinja").is_file():
            template = (root / "chat_template.jinja").read_text(encoding="utf-8")
        elif (root / "tokenizer_config.json").is_file():
            try:
                template = json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8")
                                      ).get("chat_template")
            except (json.JSONDecodeError, AttributeError):
                template = None
            template = template if isinstance(template, str) else None
    return {"files": files, "sha256": sha256_json(files) if files else None,
            "chat_template_sha256": sha256_text(template) if template is not None else None}


def safetensors_tensor_hashes(path: str | Path) -> dict[str, str]:
    """sha256 of every tensor's raw bytes in a .safetensors file (read from its header; any dtype)."""
    out: dict[str, str] = {}
    import hashlib

    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        base = 8 + header_len
        for name in sorted(k for k in header if k != "__metadata__"):
            start, end = header[name]["data_offsets"]
            f.seek(base + start)
            h = hashlib.sha256()
            remaining = end - start
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                remaining -= len(chunk)
            out[name] = h.hexdigest()
    return out


def weight_hashes(outputs: Path) -> dict[str, Any]:
    """Per .safetensors file under `outputs`: its sha256 and the sha256 of every tensor in it."""
    files = sorted(outputs.rglob("*.safetensors")) if outputs.is_dir() else []
    return {p.relative_to(outputs).as_posix(): {"sha256": sha256_file(p),
                                                "tensors": safetensors_tensor_hashes(p)}
            for p in files}


def trajectory(metrics_path: Path) -> dict[str, Any]:
    """Pointer to metrics.jsonl (per-step loss, grad norm, learning rate) with its sha256."""
    if not metrics_path.is_file():
        return {"file": metrics_path.name, "sha256": None, "steps": 0}
    steps = sum(1 for line in metrics_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and "loss" in json.loads(line))
    return {"file": metrics_path.name, "sha256": sha256_file(metrics_path), "steps": steps,
            "keys": ["step", "loss", "grad_norm", "learning_rate"]}


def run_sections(cfg: StudioConfig, run_dir: Path, outputs: Path,
                 base_model: dict[str, Any]) -> dict[str, Any]:
    """The run-specific manifest parts that tracked_run does not write itself."""
    spec = getattr(cfg, "train", None)
    config_path = getattr(cfg, "path", None)
    data_path = None
    if spec is not None and getattr(spec, "data", None):
        data_path = str(cfg.resolve_path(spec.data))
    return {
        "determinism": determinism(getattr(cfg, "seed", None)),
        "tokenizer": tokenizer_hashes(base_model.get("path")),
        "trajectory": trajectory(run_dir / "metrics.jsonl"),
        "weights": weight_hashes(outputs),
        "inputs": {"config_path": str(config_path) if config_path else None, "data_path": data_path},
        "project_git": git_state(Path(config_path).resolve().parent) if config_path else
        {"commit": None, "dirty": None},
    }


def manifest_sha256(run_dir: Path) -> str | None:
    path = Path(run_dir) / "manifest.json"
    return sha256_file(path) if path.is_file() else None
