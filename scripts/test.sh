#!/usr/bin/env bash
# README command 2: set up .venv if needed, then run the whole test suite (slow tests included).
# Extra arguments go to pytest (e.g. -m "not slow" for a quick pass).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest "$@"
