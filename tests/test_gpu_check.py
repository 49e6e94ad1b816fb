"""`bash scripts/gpu_check.sh` runs end to end on a machine without a GPU: the CPU parts pass for
real (LoRA SFT with packing, DPO, reproduce, merged export through the `studio` CLI), the GPU parts
are skipped with their reason, and stdout is exactly one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_on_cpu_and_says_what_it_skipped(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run `bash scripts/gpu_check.sh` itself (about 10 minutes)")
    env = {**os.environ, "STUDIO_SKIP_VLLM": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--budget", "900"],
                          capture_output=True, text=True, env=env, timeout=900)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(lines[0])
    checks = report["checks"]
    assert proc.returncode == 0 and report["gpu_check"] == "pass", json.dumps(checks)[:3000]
    assert report["cuda"] is False and report["failed"] == []
    for name in ("qlora_sft", "mfu", "vllm_serve", "vllm_bench", "vllm_export", "refine_llm"):
        assert checks[name]["status"] == "skipped" and checks[name]["why"], name
    assert "CUDA" in checks["qlora_sft"]["why"] and "GPU" in checks["mfu"]["why"]
    for name in ("env", "lora_sft", "dpo", "reproduce", "export"):
        assert checks[name]["status"] == "pass", (name, checks[name])
    sft = checks["lora_sft"]
    assert sft["steps"] == 2 and sft["loss_mode"] == "assistant_only" and sft["final_loss"] > 0
    assert checks["dpo"]["steps"] == 2
    assert checks["reproduce"]["passed"] is True
    assert checks["export"]["dtype"] in ("float32", "bfloat16", "float16")
    assert sorted(report["skipped"]) == ["mfu", "qlora_sft", "refine_llm", "vllm_bench",
                                         "vllm_export", "vllm_serve"]
    assert not list(tmp_path.glob("studio-gpu-check-*")), "the temporary workspace is removed"
