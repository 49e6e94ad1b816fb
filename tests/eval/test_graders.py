"""Tests for engine.eval.graders: exact_match and contains with their normalisation options."""

from __future__ import annotations

import pytest

from engine.config import GraderSpec
from engine.errors import StudioError
from engine.eval.graders import grade, normalize


def test_exact_match_default_normalisation() -> None:
    spec = GraderSpec()
    assert grade(spec, "  Refund\n  approved ", "refund approved") == 1.0
    assert grade(spec, "Refund approved.", "refund approved") == 0.0
    assert grade(spec, "STRASSE", "straße") == 1.0  # casefold, not lower()


def test_exact_match_nfkc() -> None:
    spec = GraderSpec(ignore_case=False, ignore_whitespace=False)
    assert grade(spec, "ﬁle", "file") == 1.0  # ligature
    assert grade(spec, "１２３", "123") == 1.0  # full-width digits
    assert grade(spec, "Cafe\u0301", "Café") == 1.0  # combining accent


def test_exact_match_strict_options() -> None:
    spec = GraderSpec(ignore_case=False, ignore_whitespace=False)
    assert grade(spec, "Yes", "yes") == 0.0
    assert grade(spec, "yes ", "yes") == 0.0
    assert grade(GraderSpec(ignore_case=False), " Yes\t", "Yes") == 1.0
    assert grade(GraderSpec(ignore_whitespace=False), "YES", "yes") == 1.0


def test_contains() -> None:
    spec = GraderSpec(type="contains")
    assert grade(spec, "Your order ORD-123   has shipped", "order ord-123 has") == 1.0
    assert grade(spec, "Your order has shipped", "refund") == 0.0
    strict = GraderSpec(type="contains", ignore_case=False)
    assert grade(strict, "Order shipped", "order") == 0.0


def test_contains_empty_reference_only_matches_empty_output() -> None:
    spec = GraderSpec(type="contains")
    assert grade(spec, "anything", "") == 0.0
    assert grade(spec, "   ", "") == 1.0


def test_normalize() -> None:
    assert normalize("  A\u00a0 B\n", GraderSpec()) == "a b"


def test_unknown_type_is_a_studio_error() -> None:
    spec = GraderSpec.model_construct(type="bleu", ignore_case=True, ignore_whitespace=True)
    with pytest.raises(StudioError, match="unknown grader"):
        grade(spec, "a", "a")


def test_non_text_is_a_studio_error() -> None:
    with pytest.raises(StudioError):
        grade(GraderSpec(), None, "a")  # type: ignore[arg-type]
