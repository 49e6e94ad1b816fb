"""Usage accounting is exact under concurrent writers (threads and processes)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor

from engine.serve.usage import UsageStore


def _hammer(args):
    path, worker, n = args
    store = UsageStore(path)
    for i in range(n):
        store.record("acme", f"m{i % 2}", prompt_tokens=worker + 1, completion_tokens=i, error=i % 7 == 0,
                     day="2026-11-25")


def test_concurrent_upserts_lose_nothing(tmp_path):
    path = tmp_path / "registry.sqlite"
    UsageStore(path)
    n, workers = 40, 6
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(_hammer, [(path, w, n) for w in range(workers)]))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_hammer, [(path, w, n) for w in range(2)])
    expect: dict[str, list[int]] = {}
    for w in list(range(workers)) + [0, 1]:
        for i in range(n):
            row = expect.setdefault(f"m{i % 2}", [0, 0, 0, 0])
            row[0] += 1
            row[1] += w + 1
            row[2] += i
            row[3] += i % 7 == 0
    with sqlite3.connect(path) as db:
        got = {r[0]: list(r[1:]) for r in db.execute(
            "SELECT model, requests, prompt_tokens, completion_tokens, errors FROM usage")}
    assert got == expect
    monthly = UsageStore(path).monthly("2026-11")
    assert sum(r["requests"] for r in monthly) == (workers + 2) * n
