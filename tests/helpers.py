"""Helpers shared by tests: sample raw logs, a refined dataset version, running the CLI."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def noisy_corpus(out: Path, conversations: int, seed: int) -> None:
    """Raw multi-format exports from scripts/make_noisy_data.py (loaded as a module) into `out`."""
    spec = importlib.util.spec_from_file_location("make_noisy_data",
                                                  ROOT / "scripts" / "make_noisy_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_noisy_data"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    assert module.main([str(out), "--conversations", str(conversations), "--seed", str(seed)]) in (0, None)


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


def child_env(home: Path | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `studio` child: this one without library cache and temp variables
    (HOME optionally replaced), plus `env`."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("HF_", "XDG_", "TRANSFORMERS_", "TORCH", "TRITON", "TMPDIR"))}
    if home is not None:
        full_env["HOME"] = str(home)
    full_env.update(env or {})
    return full_env


def studio(*args: str, cwd: Path, home: Path | None = None, timeout: int = 900,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `studio` entry point in a fresh interpreter (HOME optionally replaced)."""
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env=child_env(home, env),
                          capture_output=True, text=True, timeout=timeout)


def studio_popen(args: list[str], cwd: Path, env: dict[str, str] | None = None,
                 **kw: Any) -> subprocess.Popen:
    """Start the real `studio` entry point (it receives Ctrl-C: see `interruptible`)."""
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=cwd,
                            env=child_env(env=env), text=True, preexec_fn=interruptible, **kw)


def wait_until(cond: Any, timeout: float = 20.0) -> bool:
    """Poll `cond()` every 0.1 s until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def settled(read: Any, pause: float = 0.3, timeout: float = 20.0) -> Any:
    """`read()` once two reads `pause` seconds apart agree (or at `timeout`): e.g. the usage table
    while a gateway may still be writing earlier requests' counts (it writes in batches, after
    the responses)."""
    deadline = time.monotonic() + timeout
    value = read()
    while time.monotonic() < deadline:
        time.sleep(pause)
        again = read()
        if again == value:
            return value
        value = again
    return value


def serving_url(proc: subprocess.Popen, lines: list[str], timeout: float = 120.0) -> str | None:
    """Read a `studio serve` child's output until it prints where it serves; every line read is
    appended to `lines`. The base URL (without /v1), or None if the output ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return None
        lines.append(line)
        m = re.search(r"serving (http://127\.0\.0\.1:\d+)/v1", line)
        if m:
            return m.group(1)
    return None


# a child Python tries the network: one line per attempt, BLOCKED when the offline guard refused it
EGRESS_PROBE = """
import socket
try:
    socket.socket().connect(("192.0.2.1", 443))
    print("CONNECTED")
except OSError as exc:
    print("BLOCKED" if "offline guard" in str(exc) else f"OTHER {type(exc).__name__}")
try:
    socket.getaddrinfo("huggingface.co", 443)
    print("RESOLVED")
except OSError as exc:
    print("BLOCKED" if "offline guard" in str(exc) else f"OTHER {type(exc).__name__}")
"""


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
