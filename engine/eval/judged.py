"""The pairwise judge step of a diff: a local model compares base and tuned outputs item by item.

`run_judge(setup, items)` runs engine/grading/judge.py's `judge_pairwise` — every pair asked in
both orders, base as reply A and then tuned as reply A (position swapping) — over the paired items
in small chunks, with a progress bar (Ctrl-C stops it between two batches). Items whose two outputs
are identical are ties without a model call. It returns what goes into the diff's stats["judge"]
and each item's verdict for pairs.jsonl and the report:

  tuned_win_rate    (tuned wins + ties / 2) / n, over all n paired items (identical ones are ties)
  win_rate_ci       the 95% Wilson score interval of that rate, a tie counted as half a win. A tie
                    (1/2) varies less than a win (1) or a loss (0), so the binomial variance the
                    interval assumes is an upper bound: with ties the interval is conservative
  sign_test_p       two-sided exact sign test (binomial, p = 1/2) of tuned wins against base wins,
                    ties left out
  consistency_rate  the share of judged (non-identical) items whose verdict was the same in both
                    orders; an inconsistent item followed the position, not the content: a tie

The gate: with `min_win_rate` set, it passes when the lower bound of win_rate_ci is at least
`min_win_rate` (the win rate itself is not enough: 3 wins out of 4 items prove nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.progress import Progress

from engine.errors import StudioError
from engine.eval.significance import CI_LEVEL, mcnemar_exact, wilson_interval
from engine.generation.factory import open_judge
from engine.hashing import sha256_text
from engine.grading.judge import (PAIR_RUBRIC, PairwiseReport, PairwiseResult, judge_pairwise,
                                  summarize_pairwise)
from engine.registry import Registry

CI_METHOD = "wilson"
CHUNK_ITEMS = 8  # items per judge_pairwise call: the progress bar's step


@dataclass
class JudgeSetup:
    """How the diff's pairwise judge runs. `backend`: a generation backend with choice_logprobs
    (engine/generation/factory.py `open_judge`); `model`: the reference it was opened from."""

    backend: Any
    model: str
    identity: dict[str, Any] | None = None  # weights hashes (open_judge), for stats["judge"]
    rubric: str | None = None               # None: PAIR_RUBRIC
    min_win_rate: float | None = None       # None: report only
    rationale_tokens: int = 48
    batch_size: int = 8
    progress: Progress | None = None
    where: str = "gate.judge"               # the config field or CLI option, for errors

    def field(self, key: str) -> str:
        """Where a setting came from: `gate.judge.<key>`, or `--judge[-<key>]` on the command line."""
        if self.where == "--judge":
            return "--judge" if key == "model" else f"--judge-{key.replace('_', '-')}"
        return f"{self.where}.{key}"

    def check(self) -> None:
        if self.min_win_rate is not None and not 0.0 <= self.min_win_rate <= 1.0:
            raise StudioError("min_win_rate must be between 0 and 1",
                              where=self.field("min_win_rate"))
        if self.rubric is not None and not self.rubric.strip():
            raise StudioError("the judge rubric is empty", where=self.field("rubric"))
        if self.rationale_tokens < 0:
            raise StudioError("rationale_tokens must be at least 0",
                              where=self.field("rationale_tokens"))


def open_setup(registry: Registry, tenant: str, model: str, **settings: Any) -> JudgeSetup:
    """A checked JudgeSetup with its model opened (`open_judge`: store name or run id); a bad
    setting or an unknown model is a StudioError naming the field or option (`where`)."""
    setup = JudgeSetup(None, model, **settings)
    setup.check()
    try:
        setup.backend, setup.identity = open_judge(registry, model, tenant)
    except StudioError as exc:
        exc.where = exc.where or setup.field("model")
        raise
    return setup


def judge_items(setup: JudgeSetup, items: Sequence[dict[str, Any]]) -> PairwiseReport:
    """Judge items (item_id, prompt, base, tuned) in chunks; one progress step per item."""
    progress = setup.progress
    task = progress.add_task("judge", total=len(items)) if progress is not None else None
    results: list[PairwiseResult] = []
    for start in range(0, len(items), CHUNK_ITEMS):
        part = items[start:start + CHUNK_ITEMS]
        report = judge_pairwise(setup.backend, part, setup.rubric or PAIR_RUBRIC,
                                batch_size=setup.batch_size,
                                rationale_tokens=setup.rationale_tokens)
        results.extend(report.results)
        if progress is not None and task is not None:
            progress.advance(task, len(part))
    return summarize_pairwise(results)


def win_rate_interval(tuned_wins: int, ties: int, n: int,
                      confidence: float = CI_LEVEL) -> tuple[float | None, float | None]:
    """Wilson score interval of (tuned_wins + ties / 2) / n; (None, None) without items."""
    if n <= 0:
        return None, None
    lo, hi = wilson_interval(tuned_wins + ties / 2, n, confidence)
    return round(lo, 6), round(hi, 6)


def judge_stats(report: PairwiseReport, setup: JudgeSetup) -> dict[str, Any]:
    """stats["judge"]: counts, win rate and its interval, sign test, consistency, the gate."""
    lo, hi = win_rate_interval(report.tuned_wins, report.ties, report.n)
    passed: bool | None = None
    if setup.min_win_rate is not None:
        passed = lo is not None and lo >= setup.min_win_rate
    return {
        "model": setup.model,
        "weights_sha256": (setup.identity or {}).get("weights_sha256"),
        "rubric": "default" if setup.rubric is None else "custom",
        "rubric_sha256": sha256_text(setup.rubric or PAIR_RUBRIC),
        "n": report.n,
        "n_judged": report.counts.get("judged", report.n - report.n_identical),
        "n_identical": report.n_identical,
        "tuned_wins": report.tuned_wins,
        "base_wins": report.base_wins,
        "ties": report.ties,
        "consistent": report.counts.get("consistent", 0),
        "inconsistent": report.counts.get("inconsistent", 0),
        "consistency_rate": report.consistency_rate,
        "tuned_win_rate": report.tuned_win_rate,
        "win_rate_ci": [lo, hi],
        "ci_method": CI_METHOD,
        "ci_level": CI_LEVEL,
        "sign_test_p": mcnemar_exact(report.tuned_wins, report.base_wins),
        "min_win_rate": setup.min_win_rate,
        "passed": passed,
    }


def item_verdict(result: PairwiseResult) -> dict[str, Any]:
    """One item's judgement for pairs.jsonl and the report (the rationale is the judge's text
    about customer text: it stays in the tenant's diff directory)."""
    return {"winner": result.winner, "consistent": result.consistent,
            "identical": result.identical, "p_tuned": result.p_tuned,
            "p_tuned_by_order": list(result.p_tuned_by_order), "rationale": result.rationale}


def run_judge(setup: JudgeSetup,
              items: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(stats["judge"], each item's verdict by item_id) for items (item_id, prompt, base, tuned)."""
    setup.check()
    report = judge_items(setup, items)
    verdicts = {str(it["item_id"]): item_verdict(r) for it, r in zip(items, report.results)}
    return judge_stats(report, setup), verdicts
