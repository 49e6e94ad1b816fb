#!/usr/bin/env python3
"""CLI start-up benchmark: `studio --help` wall time and `import engine.cli` time, this checkout vs a
baseline git ref (checked out into a temporary worktree), interleaved run by run in one process.

    python scripts/bench_startup.py --ref main~5 --runs 30

Prints the medians and the ratio this/baseline for both numbers (1.00 = as fast; above 1 = slower),
then one JSON line. Both trees run with the same interpreter and environment; with --pyc the
byte-code cache is written and warmed first (as in an installed product), otherwise the current
PYTHONDONTWRITEBYTECODE setting applies. Wall times on a shared machine vary by several percent
from run to run; --instructions (needs valgrind) also counts the instructions of one
`studio --help` per tree, which repeats exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def import_ms(tree: Path, env: dict[str, str]) -> float:
    """Cumulative import time of engine.cli, from the interpreter's own -X importtime report."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import engine.cli"], cwd=tree,
                         env=env, capture_output=True, text=True, check=True)
    line = [ln for ln in res.stderr.splitlines() if ln.rstrip().endswith("| engine.cli")][-1]
    return int(line.split("|")[1]) / 1000


def help_s(tree: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine", "--help"], cwd=tree, env=env,
                   capture_output=True, check=True)
    return time.perf_counter() - t0


def instructions(tree: Path, env: dict[str, str]) -> int:
    """Instructions executed by one `studio --help` (valgrind's callgrind: repeatable)."""
    res = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, "-m", "engine", "--help"], cwd=tree, env=env,
                         capture_output=True, text=True, check=True)
    line = next(ln for ln in res.stderr.splitlines() if "Collected :" in ln)
    return int(line.split(":")[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="baseline git ref (commit, branch, tag)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--pyc", action="store_true", help="write and warm the byte-code cache first")
    ap.add_argument("--instructions", action="store_true",
                    help="also count the instructions of `studio --help` (valgrind)")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH="")  # each tree imports its own engine (cwd comes first)
    if args.pyc:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="studio-bench-startup-") as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.ref],
                       check=True, capture_output=True)
        try:
            trees = {"this": ROOT, "baseline": base}
            for tree in trees.values():  # warm-up (and the byte-code cache with --pyc)
                help_s(tree, env)
            results: dict[str, dict[str, list[float]]] = {k: {"help_s": [], "import_ms": []} for k in trees}
            for _ in range(args.runs):
                for name, tree in trees.items():
                    results[name]["help_s"].append(help_s(tree, env))
                    results[name]["import_ms"].append(import_ms(tree, env))
            if args.instructions:
                for name, tree in trees.items():
                    results[name]["instructions"] = [float(instructions(tree, env))]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           capture_output=True)
    summary: dict[str, object] = {"ref": args.ref, "runs": args.runs, "pyc": args.pyc}
    keys = (("help_s", "s"), ("import_ms", "ms")) + ((("instructions", ""),) if args.instructions else ())
    for key, unit in keys:
        this, baseline = (statistics.median(results[k][key]) for k in ("this", "baseline"))
        ratio = this / baseline
        fmt = (lambda v: f"{v:,.0f}") if key == "instructions" else (lambda v: f"{v:8.3f} {unit}")
        print(f"{key:12} this {fmt(this)}   baseline {fmt(baseline)}   ratio {ratio:.3f}")
        summary[key] = {"this": round(this, 4), "baseline": round(baseline, 4), "ratio": round(ratio, 4)}
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
