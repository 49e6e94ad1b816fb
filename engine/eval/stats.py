"""Paired statistics for comparing two evals: exact McNemar test, Wilson intervals, bucket counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy.stats import binomtest, norm

TEST_NAME = "mcnemar_exact"
CI_LEVEL = 0.95


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test (p = 1/2) on the b + c discordant pairs.

    b and c are the two discordant counts (e.g. fixed and broke); 1.0 when there are none.
    """
    if int(b) != b or int(c) != c or b < 0 or c < 0:
        raise ValueError("b and c must be non-negative integers")
    b, c = int(b), int(c)
    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, binomtest(b, n, 0.5, alternative="two-sided").pvalue))


def wilson_interval(k: int, n: int, confidence: float = CI_LEVEL) -> tuple[float, float]:
    """Wilson score interval for k successes out of n; (0.0, 1.0) when n == 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError("need 0 <= k <= n")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be between 0 and 1")
    if n == 0:
        return (0.0, 1.0)
    z = float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Exact at the boundaries (rounding would otherwise leave 1e-17 off 0 or 1).
    lo = 0.0 if k == 0 else min(p, max(0.0, center - half))
    hi = 1.0 if k == n else max(p, min(1.0, center + half))
    return (lo, hi)


def _as_binary(values: Sequence[float], which: str) -> list[int]:
    out: list[int] = []
    for v in values:
        f = float(v)
        if f == 1.0:
            out.append(1)
        elif f == 0.0:
            out.append(0)
        else:
            raise ValueError(f"{which} scores must be 0 or 1 for a paired binary test")
    return out


def paired_binary_summary(base: Sequence[float], tuned: Sequence[float]) -> dict[str, Any]:
    """Counts, accuracies with Wilson 95% intervals and the exact McNemar test for paired 0/1 scores.

    Buckets: both_right, fixed (base wrong → tuned right), broke (base right → tuned wrong),
    both_wrong. wins = fixed, losses = broke, ties = both_right + both_wrong.
    """
    if len(base) != len(tuned):
        raise ValueError(f"length mismatch: {len(base)} base scores vs {len(tuned)} tuned scores")
    b = _as_binary(base, "base")
    t = _as_binary(tuned, "tuned")
    n = len(b)
    both_right = sum(1 for x, y in zip(b, t) if x and y)
    fixed = sum(1 for x, y in zip(b, t) if not x and y)
    broke = sum(1 for x, y in zip(b, t) if x and not y)
    both_wrong = n - both_right - fixed - broke
    base_k, tuned_k = sum(b), sum(t)
    base_score = base_k / n if n else 0.0
    tuned_score = tuned_k / n if n else 0.0
    return {
        "n": n,
        "base_correct": base_k,
        "tuned_correct": tuned_k,
        "base_score": base_score,
        "tuned_score": tuned_score,
        "difference": tuned_score - base_score,
        "both_right": both_right,
        "fixed": fixed,
        "broke": broke,
        "both_wrong": both_wrong,
        "wins": fixed,
        "losses": broke,
        "ties": both_right + both_wrong,
        "p_value": mcnemar_exact(fixed, broke),
        "test": TEST_NAME,
        "ci_level": CI_LEVEL,
        "base_ci": list(wilson_interval(base_k, n, CI_LEVEL)),
        "tuned_ci": list(wilson_interval(tuned_k, n, CI_LEVEL)),
    }
