"""The built-in guard suite `builtin:guard`: 40 short general-ability items, each with its own grader.

A regression guard, not a benchmark. Run it next to a customer's task (`path: builtin:guard` in
an `eval.suite` task, usually with `guard: true`) and diff base against tuned: a fine-tune that
made the model stop following simple instructions or emit garbage loses many of these items at
once. Forty items cannot measure general ability: the minimum detectable effect at this size is
large (tens of points), so only a gross regression shows up as significant.

`items.jsonl` holds one item a line — {"id", "prompt", "ideal", "meta": {"skill", "grader"}} —
written by hand for this package (no third-party data). Skills: arithmetic, units (conversion),
yes_no (facts with a balanced yes/no split), format (copying a format), json (JSON-only output),
reading (simple extraction and word knowledge). `meta.grader` is an ordinary GraderSpec (regex,
json_field, json_schema); `grade` scores an output with the item's own grader, so the task's
grader is {type: python, function: "engine.eval.guard:grade"}. Numbers are graded with a pattern
that allows a few words around the number but no other digits: echoing the question fails.
Bump GUARD_VERSION whenever an item changes: the version is part of the eval's dataset reference.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.config import GraderSpec
from engine.errors import StudioError
from engine.grading.graders import grade_detail

GUARD_REF = "builtin:guard"
GUARD_VERSION = 1
GRADE_FUNCTION = "engine.eval.guard:grade"


def items_path() -> Path:
    """The JSONL file of the guard items (package data)."""
    return Path(__file__).with_name("items.jsonl")


def default_grader() -> GraderSpec:
    """The grader a guard task uses unless the task names its own: each item's meta.grader."""
    return GraderSpec(type="python", name="guard", function=GRADE_FUNCTION)


@lru_cache(maxsize=256)
def _spec(canonical: str) -> GraderSpec:
    import json

    return GraderSpec.model_validate(json.loads(canonical))


def item_grader(item: dict[str, Any]) -> GraderSpec:
    """The GraderSpec an item carries in meta.grader (StudioError naming the item without one)."""
    import json

    meta = item.get("meta") if isinstance(item, dict) else None
    raw = meta.get("grader") if isinstance(meta, dict) else None
    if not isinstance(raw, dict):
        raise StudioError(f"item {item.get('item_id')!r} has no meta.grader",
                          where="engine.eval.guard:grade",
                          hint="this grader scores items that carry their own grader spec")
    try:
        return _spec(json.dumps(raw, sort_keys=True))
    except ValueError as exc:  # pydantic ValidationError
        raise StudioError(f"item {item.get('item_id')!r} has an invalid meta.grader "
                          f"({exc.__class__.__name__})", where="engine.eval.guard:grade") from None


def grade(output: str, reference: str, item: dict[str, Any]) -> bool | float:
    """Grade `output` with the item's own grader (a python grader: fn(output, reference, item)):
    pass/fail for pass/fail graders (all of the built-in items), else the score."""
    result = grade_detail(item_grader(item), output, reference, item,
                          where=f"meta.grader of {item.get('item_id')}")
    return result.passed if result.passed is not None else result.score
