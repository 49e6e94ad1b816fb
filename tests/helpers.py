"""Helpers shared by tests: sample raw logs, a refined dataset version, running the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def make_project(tmp: Path, tickets: int = 60, seed: int = 7) -> Path:
    """A copy of configs/ next to freshly generated raw logs in data/raw (the repo's layout)."""
    shutil.copytree(ROOT / "configs", tmp / "configs")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_data.py"), "--out",
                    str(tmp / "data" / "raw"), "--tickets", str(tickets), "--seed", str(seed)],
                   check=True, capture_output=True, timeout=120)
    return tmp


def refined_dataset(project: Path, ws: Any, registry: Any) -> dict[str, Any]:
    """Run the real refine stage with configs/refine_tickets.yaml; return the registry row."""
    from engine.config import load_config
    from engine.data.refine import refine

    cfg = load_config(project / "configs" / "refine_tickets.yaml")
    res = refine(cfg, ws, registry)
    row = registry.get_dataset(cfg.tenant, res.name, res.version)
    assert row is not None
    return row


def studio(*args: str, cwd: Path, home: Path | None = None, timeout: int = 900,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `studio` entry point in a fresh interpreter (HOME optionally replaced)."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("HF_", "XDG_", "TRANSFORMERS_", "TORCH", "TRITON", "TMPDIR"))}
    if home is not None:
        full_env["HOME"] = str(home)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def interruptible() -> None:
    """preexec_fn for a child that must receive Ctrl-C: shells running jobs in the background
    (CI runners among them) start children with SIGINT ignored, and Python then never raises
    KeyboardInterrupt. Restore the default so the child installs its own handler."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def random_lora(model_dir: Path, out_dir: Path, seed: int, *, rank: int, alpha: int,
                targets: Any, scale: float) -> Path:
    """A PEFT LoRA adapter with random NON-zero A and B (so it changes outputs); built once."""
    import torch
    from peft import LoraConfig, get_peft_model

    from engine.models.loading import load_causal_lm

    if (out_dir / "adapter_config.json").is_file():
        return out_dir
    peft_model = get_peft_model(load_causal_lm(model_dir, merge=False), LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    peft_model.save_pretrained(out_dir)
    return out_dir
