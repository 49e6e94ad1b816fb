"""Paired statistics for comparing two evals of the same items: tests, intervals, gates and power.

Everything here is a pure function of the paired scores (and a seed where resampling is involved):
the same inputs give the same numbers on every run. Differences are always tuned − base.

Binary (0/1) scores
    mcnemar_exact, mcnemar_midp     exact conditional McNemar test and its mid-p variant
    wilson_interval                 Wilson score interval for one accuracy
    tango_interval                  Tango's score interval for the paired difference of accuracies
    mde_binary                      smallest detectable difference (Connor 1987 normal approximation)
    paired_binary_summary           counts, buckets, accuracies, test, intervals, MDE
Continuous scores (BLEU, ROUGE, judge scores …)
    paired_bootstrap_ci             BCa (default) or percentile bootstrap CI of the mean difference
    paired_permutation_test         sign-flip permutation test of the mean difference
    mde_continuous                  smallest detectable mean difference (paired t-test power)
    paired_continuous_summary       means, difference, CI, p-value, MDE
Both
    holm                            Holm step-down adjustment across tasks/slices
    non_inferiority, superiority    margin gates on the lower confidence bound of tuned − base

Resampling is delegated to scipy.stats.bootstrap / scipy.stats.permutation_test. Functions that
return an interval as a tuple use ±inf for a bound the data cannot limit (no items, one item);
the dict-returning functions write such a bound as None so the dict stays valid JSON.
docs/statistics.md explains every method and when to trust it.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binom, binomtest, bootstrap, nct, norm, permutation_test
from scipy.stats import t as student_t

TEST_NAME = "mcnemar_exact"
CONTINUOUS_TEST_NAME = "paired_permutation"
CI_LEVEL = 0.95
BINARY_DIFF_CI = "tango_score"
DEFAULT_RESAMPLES = 10_000
EXACT_PERMUTATION_MAX_N = 16
MDE_ALPHA = 0.05
MDE_POWER = 0.8

Alternative = Literal["two-sided", "greater", "less"]
BootstrapMethod = Literal["BCa", "percentile"]

# scipy ≥ 1.15 names the generator argument `rng`; older releases call it `random_state`.
_RNG_KW = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"


# -------------------------------------------------------------------------------------- helpers
def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be between 0 and 1")


def _check_alpha_power(alpha: float, power: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be between 0 and 1")
    if not alpha < power < 1.0:
        raise ValueError("power must be between alpha and 1")


def _z(confidence: float) -> float:
    """Two-sided critical value: the (1 + confidence) / 2 normal quantile."""
    return float(norm.ppf(0.5 + confidence / 2.0))


def _diffs(base: Sequence[float], tuned: Sequence[float]) -> np.ndarray:
    if len(base) != len(tuned):
        raise ValueError(f"length mismatch: {len(base)} base scores vs {len(tuned)} tuned scores")
    b = np.asarray(base, dtype=float).reshape(-1)
    t = np.asarray(tuned, dtype=float).reshape(-1)
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(t))):
        raise ValueError("scores must be finite numbers")
    return t - b


def _json_bound(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _mean_stat(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _paired_mean_diff(b: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(t - b, axis=axis)


# ---------------------------------------------------------------------------------------- tests
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test (p = 1/2) on the b + c discordant pairs.

    b and c are the two discordant counts (e.g. fixed and broke); 1.0 when there are none.
    """
    b, c = _counts(b, c)
    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, binomtest(b, n, 0.5, alternative="two-sided").pvalue))


def mcnemar_midp(b: int, c: int) -> float:
    """Two-sided McNemar mid-p value: the exact p-value minus the probability of the observed table.

    2·P(X ≤ min(b, c)) − P(X = min(b, c)) with X ~ Binomial(b + c, 1/2), capped at 1. Less
    conservative than the exact test with close to nominal size (Fagerland, Lydersen & Laake 2013,
    BMC Med Res Methodol 13:91). 1.0 when there are no discordant pairs.
    """
    b, c = _counts(b, c)
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    return float(min(1.0, 2.0 * binom.cdf(k, n, 0.5) - binom.pmf(k, n, 0.5)))


def _counts(b: int, c: int) -> tuple[int, int]:
    if int(b) != b or int(c) != c or b < 0 or c < 0:
        raise ValueError("b and c must be non-negative integers")
    return int(b), int(c)


def paired_permutation_test(base: Sequence[float], tuned: Sequence[float], *,
                            resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                            alternative: Alternative = "two-sided") -> float:
    """p-value of the sign-flip permutation test of the mean paired difference (tuned − base).

    Under H0 (no difference) each item's difference is as likely positive as negative, so the null
    distribution is the mean over random sign flips. Exact (all 2^n flips) when n ≤ 16, otherwise
    `resamples` random flips with the observed statistic counted once, p = (k + 1)/(resamples + 1).
    Delegates to scipy.stats.permutation_test(permutation_type="samples") on the differences.
    alternative: "greater" tests tuned > base, "less" tuned < base. 1.0 with no items or when
    every difference is zero.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError("alternative must be 'two-sided', 'greater' or 'less'")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    d = _diffs(base, tuned)
    if d.size == 0 or not np.any(d):
        return 1.0
    if d.size == 1:  # two equally likely signs (scipy needs two observations)
        one_sided = 0.5 if (d[0] > 0) == (alternative == "greater") else 1.0
        return 1.0 if alternative == "two-sided" else one_sided
    n_resamples: float = np.inf if d.size <= EXACT_PERMUTATION_MAX_N else int(resamples)
    res = permutation_test((d,), _mean_stat, permutation_type="samples", vectorized=True,
                           n_resamples=n_resamples, alternative=alternative, batch=1000,
                           **{_RNG_KW: np.random.default_rng(seed)})
    return float(min(1.0, res.pvalue))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values (controls the family-wise error rate), same keys and order.

    Sorted ascending, p_(i) becomes max over j ≤ i of min(1, (m − j + 1)·p_(j)). Ties are ordered
    by key, which cannot change the result. Matches statsmodels multipletests(method="holm").
    """
    keys = list(pvalues)
    vals = np.array([float(pvalues[k]) for k in keys], dtype=float)
    if vals.size == 0:
        return {}
    if np.any(np.isnan(vals)) or np.any(vals < 0.0) or np.any(vals > 1.0):
        raise ValueError("p-values must be between 0 and 1")
    order = sorted(range(len(keys)), key=lambda i: (vals[i], keys[i]))
    m = len(keys)
    scaled = np.array([(m - rank) * vals[i] for rank, i in enumerate(order)])
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled))
    out = {keys[i]: float(adjusted[rank]) for rank, i in enumerate(order)}
    return {k: out[k] for k in keys}


# ------------------------------------------------------------------------------------ intervals
def wilson_interval(k: float, n: int, confidence: float = CI_LEVEL) -> tuple[float, float]:
    """Wilson score interval for k successes out of n; (0.0, 1.0) when n == 0. k may be
    fractional (the pairwise judge's win rate counts a tie as half a win)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError("need 0 <= k <= n")
    _check_confidence(confidence)
    if n == 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Exact at the boundaries (rounding would otherwise leave 1e-17 off 0 or 1).
    lo = 0.0 if k == 0 else min(p, max(0.0, center - half))
    hi = 1.0 if k == n else max(p, min(1.0, center + half))
    return (lo, hi)


def _tango_statistic(delta0: float, fixed: int, broke: int, n: int) -> float:
    """Tango's score statistic for H0: p(fixed) − p(broke) = delta0, with the restricted MLE of
    p(broke) in closed form (Tango 1998, eq. 3)."""
    a = 2.0 * n
    b = -fixed - broke + (2.0 * n - fixed + broke) * delta0
    c = -broke * delta0 * (1.0 - delta0)
    p_broke = (math.sqrt(max(0.0, b * b - 4.0 * a * c)) - b) / (2.0 * a)
    var = n * (2.0 * p_broke + delta0 * (1.0 - delta0))
    num = fixed - broke - n * delta0
    if var <= 0.0:
        return math.copysign(math.inf, num) if num else 0.0
    return num / math.sqrt(var)


def tango_interval(fixed: int, broke: int, n: int,
                   confidence: float = CI_LEVEL) -> tuple[float, float]:
    """Tango's asymptotic score interval for the paired difference of proportions (fixed − broke)/n.

    T. Tango (1998), "Equivalence test and confidence interval for the difference in proportions
    for the paired-sample design", Statistics in Medicine 17:891–908. The bounds are the δ where
    the score statistic equals ±z; recommended for paired proportions by Fagerland, Lydersen &
    Laake (2014, Statistics in Medicine 33:2850–2875). Stays inside [−1, 1] and is defined for
    zero discordant pairs. (−1.0, 1.0) when n == 0.
    """
    fixed, broke = _counts(fixed, broke)
    if n < fixed + broke:
        raise ValueError("need fixed + broke <= n")
    _check_confidence(confidence)
    if n == 0:
        return (-1.0, 1.0)
    z = _z(confidence)
    est = (fixed - broke) / n
    # The statistic decreases in delta0; each bound is where it crosses ±z.
    lo = -1.0 if est == -1.0 else _decreasing_root(
        lambda d: _tango_statistic(d, fixed, broke, n) - z, -1.0, est)
    hi = 1.0 if est == 1.0 else _decreasing_root(
        lambda d: _tango_statistic(d, fixed, broke, n) + z, est, 1.0)
    return (float(min(lo, est)), float(max(hi, est)))


def _decreasing_root(f: Any, a: float, b: float) -> float:
    """Root of a decreasing f on [a, b]; the end that f never crosses when it keeps its sign."""
    eps = 1e-12
    a_, b_ = max(a, -1.0 + eps), min(b, 1.0 - eps)
    if f(a_) <= 0.0:
        return a
    if f(b_) >= 0.0:
        return b
    return float(brentq(f, a_, b_, xtol=1e-14))


def paired_bootstrap_ci(base: Sequence[float], tuned: Sequence[float], *,
                        confidence: float = CI_LEVEL, resamples: int = DEFAULT_RESAMPLES,
                        seed: int = 0, method: BootstrapMethod = "BCa") -> tuple[float, float]:
    """Two-sided bootstrap CI of the mean difference (tuned − base), resampling items (pairs).

    scipy.stats.bootstrap(paired=True) with a numpy Generator seeded by `seed`. Default method
    BCa (bias-corrected and accelerated: second-order accurate, corrects the skew of bounded or
    lopsided score differences); "percentile" is the plain quantile interval. Falls back to the
    percentile interval when BCa is undefined (too few distinct differences). Defined results:
    no items or one item → (−inf, inf) (the data cannot bound the difference); all differences
    equal → (d, d).
    """
    lo, hi, _ = bootstrap_ci_method(base, tuned, confidence=confidence, resamples=resamples,
                                    seed=seed, method=method)
    return (lo, hi)


def bootstrap_ci_method(base: Sequence[float], tuned: Sequence[float], *,
                        confidence: float = CI_LEVEL, resamples: int = DEFAULT_RESAMPLES,
                        seed: int = 0, method: BootstrapMethod = "BCa") -> tuple[float, float, str]:
    """paired_bootstrap_ci plus the method that actually produced the interval: "BCa",
    "percentile" (asked for, or BCa undefined), "degenerate" (all differences equal) or "none"
    (fewer than two items)."""
    _check_confidence(confidence)
    if method not in ("BCa", "percentile"):
        raise ValueError("method must be 'BCa' or 'percentile'")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    d = _diffs(base, tuned)
    if d.size < 2:
        return (-math.inf, math.inf, "none")
    if np.all(d == d[0]):
        return (float(d[0]), float(d[0]), "degenerate")
    lo, hi = _bootstrap(base, tuned, confidence, resamples, seed, method)
    if method == "BCa" and not (math.isfinite(lo) and math.isfinite(hi)):
        method = "percentile"
        lo, hi = _bootstrap(base, tuned, confidence, resamples, seed, method)
    return (lo, hi, method)


def _bootstrap(base: Sequence[float], tuned: Sequence[float], confidence: float,
               resamples: int, seed: int, method: str) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate-data warnings: we check the result instead
        res = bootstrap((np.asarray(base, dtype=float), np.asarray(tuned, dtype=float)),
                        _paired_mean_diff, paired=True, vectorized=True,
                        n_resamples=int(resamples), batch=1000, confidence_level=confidence,
                        method=method, **{_RNG_KW: np.random.default_rng(seed)})
    ci = res.confidence_interval
    return (float(ci.low), float(ci.high))


# ---------------------------------------------------------------------------------------- power
def mde_binary(n: int, discordant_rate: float, alpha: float = MDE_ALPHA,
               power: float = MDE_POWER) -> float | None:
    """Smallest |p(fixed) − p(broke)| a two-sided McNemar test at `alpha` detects with `power`.

    Normal approximation of Connor (1987, Biometrics 43:207–211): with ψ the discordant rate and
    δ the difference, the statistic has sd √ψ under H0 and √(ψ − δ²) under H1, so
    power(δ) = Φ((√n·δ − z·√ψ)/√(ψ − δ²)) + Φ((−√n·δ − z·√ψ)/√(ψ − δ²)), solved for δ.
    The exact test is a little more conservative, so treat the result as a lower bound. None when
    no δ ≤ ψ reaches the power (suite too small, or no discordant pairs expected).
    """
    _check_alpha_power(alpha, power)
    if not 0.0 <= discordant_rate <= 1.0:
        raise ValueError("discordant_rate must be between 0 and 1")
    if n <= 0 or discordant_rate == 0.0:
        return None
    psi = float(discordant_rate)
    z = _z(1.0 - alpha)

    def gap(delta: float) -> float:
        sd_alt = math.sqrt(max(psi - delta * delta, 0.0))
        if sd_alt == 0.0:
            return 1.0 - power if math.sqrt(n) * delta > z * math.sqrt(psi) else -power
        upper = norm.cdf((math.sqrt(n) * delta - z * math.sqrt(psi)) / sd_alt)
        lower = norm.cdf((-math.sqrt(n) * delta - z * math.sqrt(psi)) / sd_alt)
        return float(upper + lower) - power

    if gap(psi) < 0.0:
        return None
    return float(brentq(gap, 1e-12, psi, xtol=1e-14))


def mde_continuous(diffs_sd: float, n: int, alpha: float = MDE_ALPHA,
                   power: float = MDE_POWER) -> float | None:
    """Smallest |mean difference| a two-sided paired t-test at `alpha` detects with `power`.

    Power from the noncentral t distribution (df = n − 1, noncentrality δ√n/sd), both tails —
    the same definition as statsmodels TTestPower. A proxy for the permutation test, which has
    nearly the same power for the sample sizes evals use. 0.0 when the differences have no
    spread; None when n < 2.
    """
    _check_alpha_power(alpha, power)
    if not diffs_sd >= 0.0 or not math.isfinite(diffs_sd):
        raise ValueError("diffs_sd must be a non-negative number")
    if n < 2:
        return None
    if diffs_sd == 0.0:
        return 0.0
    df = n - 1
    crit = float(student_t.ppf(1.0 - alpha / 2.0, df))

    def gap(effect: float) -> float:
        nc = effect * math.sqrt(n)
        far_tail = float(nct.cdf(-crit, df, nc))  # tiny; scipy returns NaN deep in the tail
        return float(nct.sf(crit, df, nc)) + (far_tail if math.isfinite(far_tail) else 0.0) - power

    # Bracket from the normal approximation (z_α/2 + z_power)/√n, widened until power is reached.
    hi = 1.5 * (_z(1.0 - alpha) + float(norm.ppf(power))) / math.sqrt(n)
    while gap(hi) < 0.0:
        hi *= 2.0
    return float(brentq(gap, 1e-12, hi, xtol=1e-15)) * float(diffs_sd)


# ---------------------------------------------------------------------------------------- gates
def _diff_interval(base: Sequence[float], tuned: Sequence[float], *, confidence: float,
                   binary: bool, seed: int, resamples: int) -> dict[str, Any]:
    _check_confidence(confidence)
    d = _diffs(base, tuned)
    n = int(d.size)
    diff = float(d.mean()) if n else 0.0
    if binary:
        b = _as_binary(base, "base")
        t = _as_binary(tuned, "tuned")
        fixed = sum(1 for x, y in zip(b, t) if not x and y)
        broke = sum(1 for x, y in zip(b, t) if x and not y)
        lo, hi = tango_interval(fixed, broke, n, confidence)
        method = BINARY_DIFF_CI
    else:
        lo, hi, how = bootstrap_ci_method(base, tuned, confidence=confidence,
                                          resamples=resamples, seed=seed)
        method = f"bootstrap_{how.lower()}"
    return {"n": n, "diff": diff, "low": _json_bound(lo), "high": _json_bound(hi),
            "confidence": confidence, "method": method}


def non_inferiority(base: Sequence[float], tuned: Sequence[float], margin: float, *,
                    confidence: float = CI_LEVEL, binary: bool, seed: int = 0,
                    resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """Gate "tuned is not worse than base by more than `margin`".

    Passes when the lower bound of the two-sided `confidence` interval of tuned − base is above
    −margin (with 95%: a one-sided test at 2.5%). Binary scores use Tango's score interval
    (see tango_interval), continuous scores the paired BCa bootstrap (see paired_bootstrap_ci).
    Keys: n, diff, low, high, margin, confidence, method, passed. A bound the data cannot limit
    (n = 0, or n = 1 for continuous scores) is None and the gate fails.
    """
    if not margin >= 0.0 or not math.isfinite(margin):
        raise ValueError("margin must be a non-negative number")
    out = _diff_interval(base, tuned, confidence=confidence, binary=binary, seed=seed,
                         resamples=resamples)
    out["margin"] = float(margin)
    out["passed"] = out["n"] > 0 and out["low"] is not None and out["low"] > -margin
    return out


def superiority(base: Sequence[float], tuned: Sequence[float], margin: float = 0.0, *,
                confidence: float = CI_LEVEL, binary: bool, seed: int = 0,
                resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """Gate "tuned is better than base by more than `margin`": the lower bound exceeds +margin.

    Same interval and keys as non_inferiority.
    """
    if not margin >= 0.0 or not math.isfinite(margin):
        raise ValueError("margin must be a non-negative number")
    out = _diff_interval(base, tuned, confidence=confidence, binary=binary, seed=seed,
                         resamples=resamples)
    out["margin"] = float(margin)
    out["passed"] = out["n"] > 0 and out["low"] is not None and out["low"] > margin
    return out


# ------------------------------------------------------------------------------------ summaries
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


def paired_binary_summary(base: Sequence[float], tuned: Sequence[float], *,
                          confidence: float = CI_LEVEL, mde_alpha: float = MDE_ALPHA,
                          mde_power: float = MDE_POWER) -> dict[str, Any]:
    """Counts, accuracies with Wilson intervals and the exact McNemar test for paired 0/1 scores.

    Buckets: both_right, fixed (base wrong → tuned right), broke (base right → tuned wrong),
    both_wrong. wins = fixed, losses = broke, ties = both_right + both_wrong. Also: the mid-p
    McNemar value, Tango's interval of the difference (diff_ci) and the minimum detectable
    effect at this size given the observed discordant rate (mde; None when not computable).
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
    discordant_rate = (fixed + broke) / n if n else 0.0
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
        "p_value_midp": mcnemar_midp(fixed, broke),
        "test": TEST_NAME,
        "ci_level": confidence,
        "base_ci": list(wilson_interval(base_k, n, confidence)),
        "tuned_ci": list(wilson_interval(tuned_k, n, confidence)),
        "diff_ci": list(tango_interval(fixed, broke, n, confidence)),
        "diff_ci_method": BINARY_DIFF_CI,
        "discordant_rate": discordant_rate,
        "mde": mde_binary(n, discordant_rate, mde_alpha, mde_power),
        "mde_alpha": mde_alpha,
        "mde_power": mde_power,
    }


def paired_continuous_summary(base: Sequence[float], tuned: Sequence[float], *,
                              confidence: float = CI_LEVEL,
                              resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                              mde_alpha: float = MDE_ALPHA,
                              mde_power: float = MDE_POWER) -> dict[str, Any]:
    """Means, their difference with a paired bootstrap CI, the permutation p-value and the MDE.

    Keys shared with paired_binary_summary: n, base_score, tuned_score, difference, wins
    (tuned > base), losses, ties, p_value, test, ci_level, base_ci, tuned_ci (Student t intervals
    of each mean), diff_ci, diff_ci_method, mde, mde_alpha, mde_power. Extra: sd_diff (sample sd
    of the differences, ddof=1), permutation ("exact" or "monte_carlo"), resamples, seed.
    Undefined bounds are None.
    """
    _check_confidence(confidence)
    d = _diffs(base, tuned)
    b = np.asarray(base, dtype=float).reshape(-1)
    t = np.asarray(tuned, dtype=float).reshape(-1)
    n = int(d.size)
    sd = float(np.std(d, ddof=1)) if n >= 2 else 0.0
    lo, hi, how = bootstrap_ci_method(base, tuned, confidence=confidence, resamples=resamples,
                                      seed=seed)
    return {
        "n": n,
        "base_score": float(b.mean()) if n else 0.0,
        "tuned_score": float(t.mean()) if n else 0.0,
        "difference": float(d.mean()) if n else 0.0,
        "sd_diff": sd,
        "wins": int(np.sum(d > 0)),
        "losses": int(np.sum(d < 0)),
        "ties": int(np.sum(d == 0)),
        "p_value": paired_permutation_test(base, tuned, resamples=resamples, seed=seed),
        "test": CONTINUOUS_TEST_NAME,
        "permutation": "exact" if n <= EXACT_PERMUTATION_MAX_N else "monte_carlo",
        "resamples": int(resamples),
        "seed": int(seed),
        "ci_level": confidence,
        "base_ci": _t_interval(b, confidence),
        "tuned_ci": _t_interval(t, confidence),
        "diff_ci": [_json_bound(lo), _json_bound(hi)],
        "diff_ci_method": f"bootstrap_{how.lower()}",
        "mde": mde_continuous(sd, n, mde_alpha, mde_power),
        "mde_alpha": mde_alpha,
        "mde_power": mde_power,
    }


def _t_interval(x: np.ndarray, confidence: float) -> list[float | None]:
    """Student t interval of a mean; [m, m] with no spread, [None, None] with fewer than 2 values."""
    if x.size < 2:
        return [None, None]
    m = float(x.mean())
    se = float(np.std(x, ddof=1)) / math.sqrt(x.size)
    if se == 0.0:
        return [m, m]
    half = float(student_t.ppf(0.5 + confidence / 2.0, x.size - 1)) * se
    return [m - half, m + half]
