#!/usr/bin/env bash
# GPU acceptance check (scripts/gpu_check.py): QLoRA, bf16 LoRA with packing and flash/sdpa
# attention, DPO, MFU, `studio reproduce`, merged export, vLLM (CUDA) serving the base + two LoRAs
# through the gateway vs vLLM direct, lm-eval on vLLM, export -> vLLM load, the refine's LLM stages
# as datatrove tasks vs in the driver. About 10 minutes on one
# GPU; ends with ONE JSON line on stdout. Without a GPU the GPU parts are skipped, and say so.
# Sets up .venv if needed and, on a machine with an NVIDIA GPU, vLLM's own venv
# (STUDIO_SKIP_VLLM=1 skips that; the vLLM checks then say why they were skipped).
# Arguments go to scripts/gpu_check.py (--only, --budget, --keep, --vllm).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
if [ "${STUDIO_SKIP_VLLM:-0}" != "1" ] && command -v nvidia-smi >/dev/null 2>&1 \
        && nvidia-smi -L >/dev/null 2>&1; then
    bash "$ROOT/scripts/setup_vllm_env.sh"
fi
cd "$ROOT"
export PYTHONUTF8=1
exec .venv/bin/python scripts/gpu_check.py "$@"
