"""Tests for engine.eval.significance against scipy/statsmodels, published examples and simulated suites."""

from __future__ import annotations

import inspect
import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower, normal_power_het
from statsmodels.stats.proportion import proportion_confint

from engine.eval.significance import (
    Alternative,
    bootstrap_ci_method,
    holm,
    mcnemar_exact,
    mcnemar_midp,
    mde_binary,
    mde_continuous,
    non_inferiority,
    paired_binary_summary,
    paired_bootstrap_ci,
    paired_continuous_summary,
    paired_permutation_test,
    superiority,
    tango_interval,
    wilson_interval,
)


@pytest.mark.parametrize(
    "table",
    [
        [[10, 0], [0, 10]],  # b + c == 0
        [[5, 0], [7, 5]],  # b == 0
        [[5, 7], [0, 5]],  # c == 0
        [[3, 4], [4, 3]],  # b == c
        [[20, 1], [9, 30]],
        [[0, 13], [2, 0]],
        [[100, 1], [0, 100]],
        [[4000, 412], [371, 5000]],  # large n
        [[0, 250], [310, 0]],
    ],
)
def test_mcnemar_exact_matches_statsmodels(table: list[list[int]]) -> None:
    b, c = table[0][1], table[1][0]
    expected = mcnemar(table, exact=True).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(min(1.0, expected), rel=1e-9, abs=1e-15)
    assert mcnemar_exact(c, b) == pytest.approx(mcnemar_exact(b, c), rel=1e-12)


def test_mcnemar_exact_edges() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 1) == 1.0
    # b = 0, c = 10: 2 * 0.5**10
    assert mcnemar_exact(0, 10) == pytest.approx(2 * 0.5**10)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (3, 10), (1, 1), (57, 100), (4321, 9876)])
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_wilson_matches_statsmodels(k: int, n: int, confidence: float) -> None:
    lo, hi = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    got = wilson_interval(k, n, confidence)
    assert got[0] == pytest.approx(max(0.0, lo), abs=1e-12)
    assert got[1] == pytest.approx(min(1.0, hi), abs=1e-12)
    assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_paired_summary_counts() -> None:
    #        both_right x3   fixed x2   broke x1   both_wrong x2
    base = [1, 1, 1, 0, 0, 1, 0, 0]
    tuned = [1, 1, 1, 1, 1, 0, 0, 0]
    s = paired_binary_summary(base, tuned)
    assert s["n"] == 8
    assert (s["both_right"], s["fixed"], s["broke"], s["both_wrong"]) == (3, 2, 1, 2)
    assert (s["wins"], s["losses"], s["ties"]) == (2, 1, 5)
    assert s["base_score"] == pytest.approx(4 / 8)
    assert s["tuned_score"] == pytest.approx(5 / 8)
    assert s["difference"] == pytest.approx(1 / 8)
    assert s["p_value"] == pytest.approx(mcnemar([[3, 1], [2, 2]], exact=True).pvalue)
    assert s["test"] == "mcnemar_exact"
    assert s["base_ci"] == pytest.approx(list(proportion_confint(4, 8, method="wilson")))
    assert s["tuned_ci"] == pytest.approx(list(proportion_confint(5, 8, method="wilson")))


def test_paired_summary_accepts_floats_and_rejects_bad_input() -> None:
    s = paired_binary_summary([1.0, 0.0], [0.0, 0.0])
    assert s["broke"] == 1
    with pytest.raises(ValueError):
        paired_binary_summary([1, 0, 1], [1, 0])
    with pytest.raises(ValueError):
        paired_binary_summary([0.5], [1.0])


def test_paired_summary_empty() -> None:
    s = paired_binary_summary([], [])
    assert s["n"] == 0 and s["p_value"] == 1.0


# ----------------------------------------------------------------------------------------------
# Synthetic paired outcomes for Brightwave Home support tickets: known effects, fixed seeds.
SLICES = ("router_setup", "thermostat_schedule", "refund_request", "order_status", "camera_offline")


def continuous_pair(n: int, effect: float, seed: int,
                    noise: float = 0.12) -> tuple[list[float], list[float]]:
    """ROUGE-like scores in [0, 1] for n tickets; tuned = base + effect + noise, clipped."""
    rng = np.random.default_rng(seed)
    base = rng.beta(4, 3, size=n)
    tuned = np.clip(base + effect + rng.normal(0.0, noise, size=n), 0.0, 1.0)
    return base.tolist(), tuned.tolist()


def binary_pair(both_right: int, fixed: int, broke: int,
                both_wrong: int) -> tuple[list[int], list[int]]:
    base = [1] * both_right + [0] * fixed + [1] * broke + [0] * both_wrong
    tuned = [1] * both_right + [1] * fixed + [0] * broke + [0] * both_wrong
    return base, tuned


def _scipy_rng(seed: int) -> dict[str, Any]:
    kw = "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"
    return {kw: np.random.default_rng(seed)}


def _mean_diff(b: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(t - b, axis=axis)


def _no_nan(obj: Any) -> None:
    json.dumps(obj, allow_nan=False)  # raises on NaN / inf anywhere


# ------------------------------------------------------------------------------------- McNemar
def test_mcnemar_midp_published_example_and_definition() -> None:
    # Cavo et al. (2012) complete response table; mid-P = 0.034690 (Fagerland, Lydersen & Laake,
    # Statistical Analysis of Contingency Tables, ch. 8).
    assert mcnemar_midp(6, 16) == pytest.approx(0.034690, abs=5e-7)
    for b, c in [(0, 0), (3, 3), (0, 7), (12, 30), (250, 310)]:
        n, k = b + c, min(b, c)
        expected = 1.0 if n == 0 else min(1.0, mcnemar_exact(b, c) - sps.binom.pmf(k, n, 0.5))
        if n and b == c:
            expected = 1.0
        assert mcnemar_midp(b, c) == pytest.approx(expected, abs=1e-12)
        assert mcnemar_midp(b, c) <= mcnemar_exact(b, c)


# -------------------------------------------------------------------------------------- Tango
def test_tango_published_example() -> None:
    # Cavo et al. (2012): n12 = 6, n21 = 16, N = 161. Published Tango score CI -0.1240 to -0.0054.
    lo, hi = tango_interval(6, 16, 161)
    assert lo == pytest.approx(-0.1240, abs=5e-5)
    assert hi == pytest.approx(-0.0054, abs=5e-5)
    # mirrored table mirrors the interval
    lo2, hi2 = tango_interval(16, 6, 161)
    assert (lo2, hi2) == pytest.approx((-hi, -lo), abs=1e-10)


def test_tango_edges_are_defined() -> None:
    assert tango_interval(0, 0, 0) == (-1.0, 1.0)
    lo, hi = tango_interval(0, 0, 50)  # all ties: closed form ±z²/(n + z²)
    z2 = sps.norm.ppf(0.975) ** 2
    assert (lo, hi) == pytest.approx((-z2 / (50 + z2), z2 / (50 + z2)), abs=1e-10)
    lo, hi = tango_interval(10, 0, 10)  # every ticket fixed
    assert hi == 1.0 and 0.0 < lo < 1.0
    assert tango_interval(0, 10, 10)[0] == -1.0
    with pytest.raises(ValueError):
        tango_interval(5, 6, 10)


@pytest.mark.parametrize("n,p_fixed,p_broke", [(60, 0.10, 0.05), (200, 0.04, 0.06), (30, 0.2, 0.1)])
def test_tango_coverage_on_simulated_suites(n: int, p_fixed: float, p_broke: float) -> None:
    rng = np.random.default_rng(11)
    counts = rng.multinomial(n, [p_fixed, p_broke, 1 - p_fixed - p_broke], size=3000)
    cache: dict[tuple[int, int], tuple[float, float]] = {}
    covered = 0
    for f, b, _ in counts:
        key = (int(f), int(b))
        if key not in cache:
            cache[key] = tango_interval(key[0], key[1], n)
        lo, hi = cache[key]
        covered += lo <= p_fixed - p_broke <= hi
    assert 0.935 <= covered / len(counts) <= 0.965


# ---------------------------------------------------------------------------------- bootstrap
@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_matches_scipy_paired_with_same_seed(method: str) -> None:
    base, tuned = continuous_pair(120, 0.03, seed=5)
    got = paired_bootstrap_ci(base, tuned, resamples=2000, seed=7, method=method)
    ref = sps.bootstrap((np.array(base), np.array(tuned)), _mean_diff, paired=True,
                        vectorized=True, n_resamples=2000, method=method, **_scipy_rng(7))
    assert got == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high),
                                abs=1e-12)
    # resampling pairs == resampling the per-ticket differences
    d = np.array(tuned) - np.array(base)
    one = sps.bootstrap((d,), np.mean, n_resamples=2000, method=method, **_scipy_rng(7))
    assert got == pytest.approx((one.confidence_interval.low, one.confidence_interval.high),
                                abs=1e-12)


def test_bootstrap_percentile_matches_hand_resampling() -> None:
    """An independent percentile bootstrap: draw item indices with the same generator."""
    base, tuned = continuous_pair(80, -0.02, seed=9)
    d = np.array(tuned) - np.array(base)
    idx = np.random.default_rng(3).integers(0, d.size, (1500, d.size))
    means = d[idx].mean(axis=1)
    expected = tuple(np.percentile(means, [2.5, 97.5]))
    got = paired_bootstrap_ci(base, tuned, resamples=1500, seed=3, method="percentile")
    assert got == pytest.approx(expected, abs=1e-12)


def test_bootstrap_known_effect_and_determinism() -> None:
    base, tuned = continuous_pair(400, 0.05, seed=1)
    lo, hi = paired_bootstrap_ci(base, tuned, resamples=2000, seed=0)
    assert 0.0 < lo < 0.05 < hi < 0.1
    assert paired_bootstrap_ci(base, tuned, resamples=2000, seed=0) == (lo, hi)
    assert paired_bootstrap_ci(base, tuned, resamples=2000, seed=1) != (lo, hi)
    lo90, hi90 = paired_bootstrap_ci(base, tuned, confidence=0.9, resamples=2000, seed=0)
    assert lo < lo90 < hi90 < hi


def test_bootstrap_degenerate_inputs() -> None:
    assert paired_bootstrap_ci([], []) == (-math.inf, math.inf)
    assert paired_bootstrap_ci([0.4], [0.9]) == (-math.inf, math.inf)
    assert paired_bootstrap_ci([0.5] * 20, [0.5] * 20) == (0.0, 0.0)  # all ties
    assert paired_bootstrap_ci([0.2, 0.3, 0.4], [0.3, 0.4, 0.5]) == pytest.approx((0.1, 0.1))
    # two distinct differences only: BCa may be undefined, the result is still finite
    lo, hi, how = bootstrap_ci_method([0.0] * 10, [0.0] * 9 + [1.0], resamples=500)
    assert how in ("BCa", "percentile") and 0.0 <= lo <= hi <= 1.0
    with pytest.raises(ValueError):
        paired_bootstrap_ci([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        paired_bootstrap_ci([0.1, float("nan")], [0.1, 0.2])


# -------------------------------------------------------------------------------- permutation
def _sign_flip_exact(d: np.ndarray) -> dict[str, float]:
    flips = np.array(list(itertools.product([1.0, -1.0], repeat=d.size)))
    null = (flips * d).mean(axis=1)
    obs, tol = d.mean(), 1e-12
    greater = float(np.mean(null >= obs - tol))
    less = float(np.mean(null <= obs + tol))
    return {"greater": greater, "less": less, "two-sided": min(1.0, 2 * min(greater, less))}


@pytest.mark.parametrize("n,effect,seed", [(6, 0.1, 0), (11, 0.05, 1), (14, -0.08, 2), (16, 0.0, 3)])
def test_permutation_exact_enumeration(n: int, effect: float, seed: int) -> None:
    base, tuned = continuous_pair(n, effect, seed=seed)
    d = np.array(tuned) - np.array(base)
    expected = _sign_flip_exact(d)
    alternatives: tuple[Alternative, ...] = ("two-sided", "greater", "less")
    for alternative in alternatives:
        got = paired_permutation_test(base, tuned, alternative=alternative)
        assert got == pytest.approx(expected[alternative], abs=1e-12)
        # independent of the seed and of `resamples` when exact
        assert paired_permutation_test(base, tuned, alternative=alternative, seed=99,
                                       resamples=10) == got
    ref = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf)
    assert paired_permutation_test(base, tuned) == pytest.approx(ref.pvalue, abs=1e-12)


def test_permutation_monte_carlo_matches_scipy_with_same_seed() -> None:
    base, tuned = continuous_pair(150, 0.015, seed=4)
    d = np.array(tuned) - np.array(base)
    alternatives: tuple[Alternative, ...] = ("two-sided", "greater")
    for alternative in alternatives:
        got = paired_permutation_test(base, tuned, resamples=3000, seed=11,
                                      alternative=alternative)
        ref = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=3000,
                                   alternative=alternative, **_scipy_rng(11))
        assert got == pytest.approx(ref.pvalue, abs=1e-12)
    p = paired_permutation_test(base, tuned, resamples=3000, seed=11)
    assert p == paired_permutation_test(base, tuned, resamples=3000, seed=11)  # deterministic
    assert p >= 1 / 3001  # Monte Carlo p-values are never 0
    # a clear gain is detected; no effect is not
    base2, tuned2 = continuous_pair(150, 0.06, seed=4)
    assert paired_permutation_test(base2, tuned2, resamples=2000) < 0.001
    assert paired_permutation_test(base2, tuned2, resamples=2000, alternative="less") > 0.99


def test_permutation_degenerate_inputs() -> None:
    assert paired_permutation_test([], []) == 1.0
    assert paired_permutation_test([0.7] * 30, [0.7] * 30) == 1.0
    assert paired_permutation_test([0.2], [0.9]) == 1.0  # one flip each way: p = 1
    assert paired_permutation_test([0.2], [0.9], alternative="greater") == 0.5
    assert paired_permutation_test([0.2], [0.9], alternative="less") == 1.0
    assert paired_permutation_test([0.9], [0.2], alternative="less") == 0.5
    with pytest.raises(ValueError):
        paired_permutation_test([0.1], [0.2], alternative="bigger")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ Holm
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holm_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = np.concatenate([rng.uniform(0, 0.05, 4), rng.uniform(0, 1, 6), [0.0, 1.0, 0.02, 0.02]])
    pvals = {f"{SLICES[i % len(SLICES)]}#{i}": float(p) for i, p in enumerate(raw)}
    got = holm(pvals)
    expected = multipletests(list(pvals.values()), method="holm")[1]
    assert list(got) == list(pvals)  # same keys, same order
    assert list(got.values()) == pytest.approx(list(expected), abs=1e-12)


def test_holm_edges() -> None:
    assert holm({}) == {}
    assert holm({"refund_request": 0.03}) == {"refund_request": 0.03}
    with pytest.raises(ValueError):
        holm({"router_setup": float("nan")})
    with pytest.raises(ValueError):
        holm({"router_setup": 1.2})


# ------------------------------------------------------------------------------------------- MDE
@pytest.mark.parametrize("n", [5, 10, 30, 100, 1000])
@pytest.mark.parametrize("alpha,power", [(0.05, 0.8), (0.01, 0.9)])
def test_mde_continuous_matches_statsmodels(n: int, alpha: float, power: float) -> None:
    sd = 0.17
    mde = mde_continuous(sd, n, alpha, power)
    assert mde is not None
    # statsmodels' power at our MDE is the requested power; its own solver agrees to its precision
    got_power = TTestPower().power(effect_size=mde / sd, nobs=n, alpha=alpha)
    assert got_power == pytest.approx(power, abs=1e-9)
    assert mde / sd == pytest.approx(TTestPower().solve_power(nobs=n, alpha=alpha, power=power),
                                     rel=1e-4)


def test_mde_continuous_edges() -> None:
    assert mde_continuous(0.2, 1) is None
    assert mde_continuous(0.0, 50) == 0.0
    assert mde_continuous(0.2, 400) < mde_continuous(0.2, 100)  # type: ignore[operator]
    with pytest.raises(ValueError):
        mde_continuous(-0.1, 50)


@pytest.mark.parametrize("n,psi", [(100, 0.2), (500, 0.1), (50, 0.5), (2000, 0.03)])
def test_mde_binary_matches_statsmodels_normal_power(n: int, psi: float) -> None:
    mde = mde_binary(n, psi)
    assert mde is not None and 0.0 < mde <= psi
    power = normal_power_het(mde, n, 0.05, std_null=math.sqrt(psi),
                             std_alternative=math.sqrt(psi - mde * mde))
    assert power == pytest.approx(0.8, abs=1e-9)


def test_mde_binary_simulated_power() -> None:
    """At the MDE, McNemar on simulated suites rejects about 80% of the time (exact: a bit less)."""
    n, psi = 400, 0.2
    mde = mde_binary(n, psi)
    assert mde is not None
    rng = np.random.default_rng(2)
    counts = rng.multinomial(n, [(psi + mde) / 2, (psi - mde) / 2, 1 - psi], size=20000)
    f, b = counts[:, 0], counts[:, 1]
    k, m = np.minimum(f, b), f + b
    exact = np.minimum(1.0, 2 * sps.binom.cdf(k, m, 0.5))
    midp = np.minimum(1.0, 2 * sps.binom.cdf(k, m, 0.5) - sps.binom.pmf(k, m, 0.5))
    assert 0.74 <= float(np.mean(exact < 0.05)) <= 0.82
    assert 0.77 <= float(np.mean(midp < 0.05)) <= 0.83


def test_mde_binary_edges() -> None:
    assert mde_binary(0, 0.2) is None
    assert mde_binary(100, 0.0) is None  # all ties expected
    assert mde_binary(20, 0.05) is None  # too small a suite for any effect
    with pytest.raises(ValueError):
        mde_binary(100, 1.5)
    with pytest.raises(ValueError):
        mde_binary(100, 0.2, alpha=0.05, power=0.01)


# ------------------------------------------------------------------------------ gates (binary)
def test_non_inferiority_binary_both_sides_of_margin() -> None:
    # the Cavo table as tickets: tuned fixed 6, broke 16 of 161; lower bound -0.1240
    base, tuned = binary_pair(59, 6, 16, 80)
    ok = non_inferiority(base, tuned, 0.125, binary=True)
    assert set(ok) >= {"diff", "low", "high", "margin", "passed", "method"}
    assert ok["method"] == "tango_score" and ok["passed"] is True
    assert ok["diff"] == pytest.approx(-10 / 161)
    assert (ok["low"], ok["high"]) == pytest.approx(tango_interval(6, 16, 161))
    assert non_inferiority(base, tuned, 0.12, binary=True)["passed"] is False
    low = ok["low"]
    assert non_inferiority(base, tuned, -low + 1e-6, binary=True)["passed"] is True
    assert non_inferiority(base, tuned, -low - 1e-6, binary=True)["passed"] is False
    # a 99% interval is wider: the same margin fails
    assert non_inferiority(base, tuned, 0.125, confidence=0.99, binary=True)["passed"] is False
    _no_nan(ok)


def test_superiority_binary() -> None:
    base, tuned = binary_pair(120, 30, 8, 42)  # clear gain
    sup = superiority(base, tuned, binary=True)
    assert sup["passed"] is True and sup["low"] > 0
    assert superiority(base, tuned, sup["low"] + 1e-6, binary=True)["passed"] is False
    assert superiority(base, tuned, sup["low"] - 1e-6, binary=True)["passed"] is True
    assert superiority(*binary_pair(59, 6, 16, 80), binary=True)["passed"] is False


def test_gates_degenerate_binary() -> None:
    empty = non_inferiority([], [], 0.05, binary=True)
    assert empty["passed"] is False and empty["n"] == 0
    ties = non_inferiority(*binary_pair(100, 0, 0, 100), 0.05, binary=True)  # no discordant pair
    assert ties["diff"] == 0.0 and ties["passed"] is True  # lower bound ≈ -0.019
    assert non_inferiority(*binary_pair(100, 0, 0, 100), 0.01, binary=True)["passed"] is False
    with pytest.raises(ValueError):
        non_inferiority([1], [1], -0.1, binary=True)
    with pytest.raises(ValueError):
        non_inferiority([0.5], [1], 0.1, binary=True)


# -------------------------------------------------------------------------- gates (continuous)
def test_non_inferiority_continuous_both_sides_of_margin() -> None:
    base, tuned = continuous_pair(300, -0.01, seed=8)
    res = non_inferiority(base, tuned, 0.05, binary=False, resamples=2000, seed=0)
    assert res["method"] == "bootstrap_bca"
    lo, hi = paired_bootstrap_ci(base, tuned, resamples=2000, seed=0)
    assert (res["low"], res["high"]) == pytest.approx((lo, hi), abs=1e-15)
    assert res["diff"] == pytest.approx(float(np.mean(np.array(tuned) - np.array(base))))
    assert lo < res["diff"] < hi < 0.01
    assert non_inferiority(base, tuned, -lo + 1e-6, binary=False, resamples=2000)["passed"] is True
    assert non_inferiority(base, tuned, -lo - 1e-6, binary=False, resamples=2000)["passed"] is False
    _no_nan(res)


def test_gates_degenerate_continuous() -> None:
    none = non_inferiority([], [], 0.1, binary=False)
    assert none["low"] is None and none["high"] is None and none["passed"] is False
    one = non_inferiority([0.3], [0.9], 0.1, binary=False)
    assert one["low"] is None and one["passed"] is False
    same = non_inferiority([0.4] * 25, [0.4] * 25, 0.01, binary=False)
    assert (same["low"], same["high"], same["passed"]) == (0.0, 0.0, True)
    assert same["method"] == "bootstrap_degenerate"
    _no_nan([none, one, same])


# ---------------------------------------------------------------------------------- summaries
def test_binary_summary_added_keys() -> None:
    base, tuned = binary_pair(59, 6, 16, 80)
    s = paired_binary_summary(base, tuned)
    assert s["p_value"] == pytest.approx(mcnemar([[59, 6], [16, 80]], exact=True).pvalue)
    assert s["p_value_midp"] == pytest.approx(0.034690, abs=5e-7)
    assert s["diff_ci"] == pytest.approx([-0.1240, -0.0054], abs=5e-5)
    assert s["diff_ci_method"] == "tango_score"
    assert s["discordant_rate"] == pytest.approx(22 / 161)
    assert s["mde"] == pytest.approx(mde_binary(161, 22 / 161))
    assert s["diff_ci"][0] <= s["difference"] <= s["diff_ci"][1]
    _no_nan(s)
    empty = paired_binary_summary([], [])
    assert empty["diff_ci"] == [-1.0, 1.0] and empty["mde"] is None
    _no_nan(empty)
    ties = paired_binary_summary(*binary_pair(10, 0, 0, 5))
    assert ties["p_value"] == ties["p_value_midp"] == 1.0 and ties["mde"] is None
    _no_nan(ties)


def test_continuous_summary() -> None:
    base, tuned = continuous_pair(200, 0.04, seed=12)
    s = paired_continuous_summary(base, tuned, resamples=2000, seed=3)
    d = np.array(tuned) - np.array(base)
    assert s["n"] == 200 and s["test"] == "paired_permutation" and s["permutation"] == "monte_carlo"
    assert s["base_score"] == pytest.approx(float(np.mean(base)))
    assert s["tuned_score"] == pytest.approx(float(np.mean(tuned)))
    assert s["difference"] == pytest.approx(float(d.mean()))
    assert s["sd_diff"] == pytest.approx(float(np.std(d, ddof=1)))
    assert s["wins"] + s["losses"] + s["ties"] == 200 and s["wins"] > s["losses"]
    assert s["diff_ci"] == pytest.approx(list(paired_bootstrap_ci(base, tuned, resamples=2000, seed=3)))
    assert s["p_value"] == paired_permutation_test(base, tuned, resamples=2000, seed=3) < 0.01
    assert s["mde"] == pytest.approx(mde_continuous(s["sd_diff"], 200))
    ref = sps.ttest_1samp(base, 0.0).confidence_interval(0.95)
    assert s["base_ci"] == pytest.approx([ref.low, ref.high], abs=1e-12)
    assert s == paired_continuous_summary(base, tuned, resamples=2000, seed=3)  # deterministic
    _no_nan(s)


def test_continuous_summary_degenerate() -> None:
    empty = paired_continuous_summary([], [])
    assert empty["n"] == 0 and empty["p_value"] == 1.0 and empty["diff_ci"] == [None, None]
    assert empty["mde"] is None and empty["permutation"] == "exact"
    same = paired_continuous_summary([0.6] * 40, [0.6] * 40, resamples=500)
    assert same["p_value"] == 1.0 and same["diff_ci"] == [0.0, 0.0] and same["mde"] == 0.0
    assert same["ties"] == 40 and same["base_ci"] == [0.6, 0.6]
    small = paired_continuous_summary([0.2, 0.5, 0.4], [0.3, 0.9, 0.4], resamples=500)
    assert small["permutation"] == "exact" and 0.0 < small["p_value"] <= 1.0
    for s in (empty, same, small):
        _no_nan(s)
