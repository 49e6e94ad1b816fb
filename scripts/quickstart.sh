#!/usr/bin/env bash
# README command 1: raw Brightwave support logs -> LoRA expert on SmolLM2-135M -> proven better.
# Sets up .venv if needed, generates the sample raw logs once, then runs the pipeline.
# Extra arguments go to `studio run` (e.g. --json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
if [ ! -f data/raw/tickets.csv ] || [ ! -f data/raw/chat_export.jsonl ]; then
    .venv/bin/python scripts/make_sample_data.py --out data/raw
fi
exec .venv/bin/studio run configs/quickstart.yaml "$@"
