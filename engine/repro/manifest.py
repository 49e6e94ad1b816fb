"""Run manifests: what a run was made from (config, data, model, code, packages, hardware)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import engine

KEY_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers",
                "safetensors", "pydantic", "expert-studio")


def package_versions() -> dict[str, str]:
    """Every installed distribution and its version (a lockfile of the environment)."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[name.lower()] = dist.version
    return dict(sorted(out.items()))


def git_state(start: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the engine's source checkout, when it is one."""
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


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "system": platform.system(),
                            "python": platform.python_version(), "cpu_count": os.cpu_count()}
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
            info["cuda"] = torch.version.cuda
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
