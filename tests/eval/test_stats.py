"""Tests for engine.eval.stats: exact McNemar and Wilson intervals against statsmodels, bucket counts."""

from __future__ import annotations

import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from engine.eval.stats import mcnemar_exact, paired_binary_summary, wilson_interval


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
