#!/usr/bin/env bash
# README command 2: set up .venv if needed, then run the whole test suite (slow tests included).
# Where the machine allows it, the tests run inside a fresh network namespace that has only a
# loopback interface, so "works with the network absent" is proven on every run
# (STUDIO_TEST_NETWORK=on runs them in the normal network instead).
# Extra arguments go to pytest (e.g. -m "not slow" for a quick pass).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# UTF-8 for every file and pipe the tests and their subprocesses open without an explicit encoding,
# whatever the locale (Python's default follows it: ASCII or Latin-1 under non-UTF-8 locales)
export PYTHONUTF8=1
# the tests' `python -m engine` subprocesses import this checkout, whatever another editable
# install of the package points at
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "${STUDIO_TEST_NETWORK:-off}" = "off" ] && command -v unshare >/dev/null 2>&1 \
        && command -v ip >/dev/null 2>&1 && unshare -n true 2>/dev/null; then
    echo "running the tests with the network absent (network namespace, loopback only)" >&2
    exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest "$@"
