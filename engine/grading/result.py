"""`GradeResult`: what every grader and model judge returns for one output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GradeResult:
    """score in [0, 1]; passed by the grader's rule or threshold (None: no threshold given for a
    continuous score); detail: codes and numbers only (never output or reference text)."""

    score: float
    passed: bool | None
    detail: dict[str, Any] = field(default_factory=dict)
