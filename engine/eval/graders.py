"""Graders: score one model output against its reference as 1.0 (right) or 0.0 (wrong)."""

from __future__ import annotations

import re
import unicodedata

from engine.config import GraderSpec
from engine.errors import StudioError

_WHITESPACE = re.compile(r"\s+")


def normalize(text: str, spec: GraderSpec) -> str:
    """The form both sides are compared in: NFKC always, then case folding and whitespace
    collapsing (runs → one space, ends stripped) when the spec asks for them."""
    text = unicodedata.normalize("NFKC", text)
    if spec.ignore_case:
        text = text.casefold()
    if spec.ignore_whitespace:
        text = _WHITESPACE.sub(" ", text).strip()
    return text


def grade(spec: GraderSpec, output: str, reference: str) -> float:
    """1.0 if `output` satisfies `reference` under the spec's grader, else 0.0.

    exact_match: the normalised texts are equal.
    contains:    the normalised reference occurs in the normalised output. An empty reference
                 would be contained in everything, so it only matches an empty output.
    """
    if not isinstance(output, str) or not isinstance(reference, str):
        raise StudioError(
            "grader inputs must be text",
            hint="every eval item needs a string reference and a string model output",
        )
    out = normalize(output, spec)
    ref = normalize(reference, spec)
    if spec.type == "exact_match":
        return 1.0 if out == ref else 0.0
    if spec.type == "contains":
        if not ref:
            return 1.0 if not out else 0.0
        return 1.0 if ref in out else 0.0
    raise StudioError(
        f"unknown grader type '{spec.type}'",
        where="eval.grader.type",
        hint="use 'exact_match' or 'contains'",
    )
