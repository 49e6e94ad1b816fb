"""The diff's pairwise judge (engine/eval/judged.py): the tiny model as a real judge through
diff_evals and `studio diff --judge`, the win-rate interval against hand-computed values, the
position swap, the gate on min_win_rate (CLI exit code and the pipeline's diff step), config errors.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from scipy.stats import binomtest

from engine.config import parse_config
from engine.errors import ConfigError, StudioError
from engine.eval.diff import diff_evals
from engine.eval.items import EvalResult
from engine.eval.judged import JudgeSetup, open_setup, win_rate_interval
from engine.flow import _diff, open_pipeline_judge
from engine.generation.transformers_backend import TransformersBackend
from engine.grading.judge import PAIR_RUBRIC
from engine.hashing import sha256_json, sha256_text
from engine.models.store import import_model
from engine.registry import Registry
from engine.workspace import Workspace
from tests.helpers import studio, studio_popen, wait_until

HOSTILE = '<img src=x onerror="alert(1)">why & how'


def write_eval(directory: Path, eval_id: str, model_ref: str, outputs: list[str]) -> Path:
    """An eval directory as `studio eval` writes it, item i answering outputs[i]."""
    directory.mkdir(parents=True)
    lines = []
    for i, output in enumerate(outputs):
        prompt = [{"role": "user", "content": f"Where is my order {i}?"}]
        reference = f"Order {i} ships on Monday."
        lines.append(json.dumps({
            "item_id": f"it-{i}", "item_hash": sha256_json({"prompt": prompt, "reference": reference}),
            "prompt": prompt, "reference": reference, "output": output,
            "score": float(output == reference), "meta": {}}))
    (directory / "outputs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {"eval_id": eval_id, "model_ref": model_ref, "dataset": "support@v1",
               "split": "eval", "n": len(outputs), "grader": {"type": "exact_match"}}
    (directory / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return directory


# Items 0, 3 and 6 have identical outputs; the others differ (one of them hostile text).
BASE = ["same answer", "no idea", "ask someone else", "same again", "<script>alert(1)</script>",
        "no", "identical", "dunno"]
TUNED = ["same answer", "Your order ships on Monday.", "Sorry! It arrives tomorrow.", "same again",
         "It ships today & arrives <b>Friday</b>.", "Yes, refunded.", "identical",
         "Tracking link is in your email."]
IDENTICAL = {"it-0", "it-3", "it-6"}


def pair(tmp_path: Path) -> tuple[Path, Path]:
    return (write_eval(tmp_path / "base", "ev-base", "base-model", BASE),
            write_eval(tmp_path / "tuned", "ev-tuned", "run-1", TUNED))


class CountingBackend(TransformersBackend):
    """The real transformers backend, counting the prompts it is asked to score."""

    scored: list[list[dict[str, str]]]

    def choice_logprobs(self, prompts: Any, choices: list[str], batch_size: int = 8) -> Any:
        self.scored = [*getattr(self, "scored", []), *prompts]
        return super().choice_logprobs(prompts, choices, batch_size)


class PositionBiased:
    """A judge that always prefers reply A and explains itself with hostile text: it tests how
    the two orders are combined, which a real model does not do reliably."""

    def __init__(self) -> None:
        self.calls = 0

    def choice_logprobs(self, prompts: Any, choices: list[str], batch_size: int = 8) -> Any:
        self.calls += len(prompts)
        return [[math.log(0.9), math.log(0.1)] for _ in prompts]

    def generate(self, prompts: Any, max_new_tokens: int, batch_size: int, *a: Any, **k: Any) -> Any:
        return [HOSTILE for _ in prompts]

    def describe(self) -> dict[str, Any]:
        return {"backend": "position-biased"}


# ----------------------------------------------------------------------------------- statistics
def test_win_rate_interval_matches_hand_computed_wilson() -> None:
    # 6 wins, 2 ties, 2 losses of 10: p = 7/10. By hand, z = 1.959964 (z² = 3.841459):
    # centre = (0.7 + z²/20) / (1 + z²/10) = 0.8920729 / 1.3841459 = 0.644493
    # half   = z / 1.3841459 * sqrt(0.7 * 0.3 / 10 + z² / 400) = 1.416007 * 0.174939 = 0.247715
    lo, hi = win_rate_interval(6, 2, 10)
    assert lo == pytest.approx(0.396778, abs=2e-6) and hi == pytest.approx(0.892209, abs=2e-6)
    # no ties: the plain Wilson interval of 8/10 (textbook value [0.4902, 0.9433])
    lo, hi = win_rate_interval(8, 0, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    assert win_rate_interval(0, 0, 0) == (None, None)


def test_real_judge_through_the_diff(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The tiny model judges every differing pair in both orders; identical pairs are ties that
    cost no model call; the numbers reach stats.json, pairs.jsonl and the report."""
    base, tuned = pair(tmp_path)
    backend = CountingBackend(tiny_model_dir)
    res = diff_evals(base, tuned, tmp_path / "diff", require="none",
                     judge=JudgeSetup(backend, "tiny", rationale_tokens=8))
    judged = len(BASE) - len(IDENTICAL)
    assert len(backend.scored) == 2 * judged  # two orders per differing pair, none for the rest
    assert not any("same answer" in m["content"] for p in backend.scored for m in p)
    orders = [(p[1]["content"].split("Reply A:\n")[1].split("\n")[0],
               p[1]["content"].split("Reply B:\n")[1].split("\n")[0]) for p in backend.scored]
    for first, second in zip(orders[0::2], orders[1::2]):  # the swap: A/B exchanged
        assert first == (second[1], second[0])

    j = json.loads(res.stats_path.read_text())["judge"]
    assert (j["n"], j["n_identical"], j["n_judged"]) == (len(BASE), len(IDENTICAL), judged)
    assert j["tuned_wins"] + j["base_wins"] + j["ties"] == len(BASE)
    assert j["ties"] >= len(IDENTICAL)
    assert j["consistent"] + j["inconsistent"] == judged
    assert j["tuned_win_rate"] == pytest.approx((j["tuned_wins"] + j["ties"] / 2) / len(BASE),
                                                abs=1e-6)
    assert j["win_rate_ci"] == list(win_rate_interval(j["tuned_wins"], j["ties"], len(BASE)))
    wins, losses = j["tuned_wins"], j["base_wins"]
    expect_p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    assert j["sign_test_p"] == pytest.approx(expect_p)
    assert j["passed"] is None and "judge_min_win_rate" not in res.stats["gate"]
    assert j["rubric"] == "default" and j["rubric_sha256"] == sha256_text(PAIR_RUBRIC)

    pairs = {r["item_id"]: r for r in map(json.loads, res.pairs_path.read_text().splitlines())}
    for item_id, row in pairs.items():
        v = row["judge"]
        assert v["identical"] == (item_id in IDENTICAL)
        if item_id in IDENTICAL:
            assert (v["winner"], v["rationale"], v["p_tuned_by_order"]) == ("tie", None, [0.5, 0.5])
        else:
            assert all(0.0 <= p <= 1.0 for p in v["p_tuned_by_order"])
            assert isinstance(v["rationale"], str)
    page = res.report_path.read_text()
    assert 'id="judge-win-rate"' in page and "identical outputs: a tie without asking" in page
    assert "with base as reply A" in page


def test_position_bias_gives_ties_and_the_rationale_is_escaped(tmp_path: Path) -> None:
    base, tuned = pair(tmp_path)
    biased = PositionBiased()
    res = diff_evals(base, tuned, tmp_path / "diff", require="none",
                     judge=JudgeSetup(biased, "biased", min_win_rate=0.2))
    j = res.stats["judge"]
    judged = len(BASE) - len(IDENTICAL)
    assert biased.calls == 2 * judged
    # base first: A = base wins; tuned first: A = tuned wins → inconsistent → a tie, every item
    assert (j["tuned_wins"], j["base_wins"], j["ties"]) == (0, 0, len(BASE))
    assert (j["consistent"], j["inconsistent"], j["consistency_rate"]) == (0, judged, 0.0)
    assert j["tuned_win_rate"] == 0.5 and j["sign_test_p"] == 1.0
    # the Wilson interval of 4 / 8, by hand: centre 0.5, half = z/(1+z²/8) * sqrt(1/32 + z²/256)
    assert j["win_rate_ci"] == pytest.approx([0.215216, 0.784784], abs=2e-6)
    assert j["passed"] and res.gate_passed  # 0.215 ≥ 0.2
    row = json.loads(res.pairs_path.read_text().splitlines()[1])["judge"]
    assert row["p_tuned_by_order"] == pytest.approx([0.1, 0.9])
    assert row["winner"] == "tie" and not row["consistent"] and row["rationale"] == HOSTILE
    page = res.report_path.read_text()
    assert HOSTILE not in page and "<img" not in page and "<script>alert" not in page
    assert str(escape(HOSTILE)) in page
    assert "0.10 with base as reply A, 0.90 with tuned as reply A" in page

    res = diff_evals(base, tuned, tmp_path / "diff2", require="none",
                     judge=JudgeSetup(PositionBiased(), "biased", min_win_rate=0.3))
    assert not res.stats["judge"]["passed"] and not res.gate_passed  # 0.215 < 0.3
    assert not res.stats["gate"]["passed"] and res.stats["gate"]["judge_min_win_rate"] == 0.3
    assert "lower bound 21.5% &lt; 30.0%" in res.report_path.read_text()


# ------------------------------------------------------------------------------- the CLI gate
@pytest.fixture
def project(tmp_path: Path, tiny_model_dir: Path) -> dict[str, Any]:
    ws = Workspace(tmp_path / "ws").ensure()
    reg = Registry(ws.registry_path)
    import_model(ws, reg, str(tiny_model_dir), "judge-tiny")
    for eid, ref, outputs in (("ev-base", "base-model", BASE), ("ev-tuned", "run-1", TUNED)):
        path = write_eval(ws.eval_dir("default", eid), eid, ref, outputs)
        reg.put_eval(eid, "default", "eval", ref, "support@v1", path, {"n": len(outputs)})
    return {"dir": tmp_path, "ws": ws, "reg": reg,
            "env": {"STUDIO_WORKSPACE": str(ws.root), "HOME": str(tmp_path)}}


def diff_cli(project: dict[str, Any], *args: str) -> Any:
    return studio("diff", "ev-base", "ev-tuned", "--require", "none", *args,
                  cwd=project["dir"], env=project["env"])


def test_cli_gate_on_the_win_rate_lower_bound(project: dict[str, Any]) -> None:
    res = diff_cli(project, "--judge", "judge-tiny", "--judge-rationale-tokens", "4", "--json")
    assert res.returncode == 0, res.stderr
    j = json.loads(res.stdout)["stats"]["judge"]
    assert j["model"] == "judge-tiny" and j["n"] == len(BASE) and j["passed"] is None
    low = j["win_rate_ci"][0]

    res = diff_cli(project, "--judge", "judge-tiny", "--judge-rationale-tokens", "0",
                   "--judge-min-win-rate", str(low))
    assert res.returncode == 0, res.stderr  # lower bound == min_win_rate passes
    assert "judge judge-tiny: tuned win rate" in res.stdout and "pass" in res.stdout

    res = diff_cli(project, "--judge", "judge-tiny", "--judge-rationale-tokens", "0",
                   "--judge-min-win-rate", str(round(low + 0.01, 6)), "--json")
    assert res.returncode == 3, res.stderr
    doc = json.loads(res.stdout)
    assert doc["gate_passed"] is False and doc["stats"]["judge"]["passed"] is False
    assert "judge win rate lower bound" in res.stderr


def test_cli_judge_errors_name_the_option(project: dict[str, Any]) -> None:
    res = diff_cli(project, "--judge-min-win-rate", "0.5")
    assert res.returncode == 2 and "--judge-min-win-rate" in res.stderr and "needs a judge" in res.stderr
    res = diff_cli(project, "--judge", "judge-tiny", "--judge-min-win-rate", "1.5")
    assert res.returncode == 2 and "--judge-min-win-rate" in res.stderr
    res = diff_cli(project, "--judge", "no-such-model")
    assert res.returncode == 2 and "--judge: unknown model or run 'no-such-model'" in res.stderr
    assert "Traceback" not in res.stderr


def test_ctrl_c_while_judging_keeps_nothing(project: dict[str, Any]) -> None:
    ws, reg, n = project["ws"], project["reg"], 1000  # far more than the test waits for
    for eid, outputs in (("ev-a", [f"no idea {i}" for i in range(n)]),
                         ("ev-b", [f"It ships on day {i}, sorry for the delay." for i in range(n)])):
        path = write_eval(ws.eval_dir("default", eid), eid, eid, outputs)
        reg.put_eval(eid, "default", "eval", eid, "support@v1", path, {"n": n})
    proc = studio_popen(["diff", "ev-a", "ev-b", "--require", "none", "--judge", "judge-tiny"],
                        cwd=project["dir"], env=project["env"], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    try:
        scratch = ws.root / "tenants" / "default" / "tmp"
        wait_until(lambda: any(scratch.glob("job-*")) or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, proc.communicate()[1]  # still judging
        time.sleep(2)  # the judge model loads and starts on the first chunk
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not list(ws.root.glob("tenants/default/evals/diff-*"))
    assert not list(scratch.glob("job-*"))


# ------------------------------------------------------------------------- the pipeline's gate
PIPELINE = """kind: pipeline
model: {{name: base}}
refine: {{dataset: d, inputs: [{{path: a.jsonl, format: openai_jsonl}}]}}
train: {{}}
eval: {{}}
gate: {{require: none, judge: {judge}}}
"""


def test_pipeline_diff_step_gates_on_the_judge(project: dict[str, Any]) -> None:
    ws, reg = project["ws"], project["reg"]
    base = EvalResult("ev-base", ws.eval_dir("default", "ev-base"), "base-model", len(BASE), 0.0)
    tuned = EvalResult("ev-tuned", ws.eval_dir("default", "ev-tuned"), "run-1", len(BASE), 0.0)
    verdicts = {}
    for threshold in (0.0, 0.99):
        cfg = parse_config(PIPELINE.format(
            judge=f"{{model: judge-tiny, min_win_rate: {threshold}, rationale_tokens: 0}}"))
        judge = open_pipeline_judge(cfg, ws, reg, None)
        assert judge is not None and judge.min_win_rate == threshold
        result = _diff(cfg, ws, base, tuned, "base-model", "run-1", "none", None, judge=judge)
        verdicts[threshold] = (result.gate_passed, result.stats["judge"]["passed"])
    assert verdicts == {0.0: (True, True), 0.99: (False, False)}
    cfg = parse_config(PIPELINE.format(judge="{model: judge-gone}"), "p.yaml")
    with pytest.raises(StudioError) as info:
        open_pipeline_judge(cfg, ws, reg, None)
    assert info.value.where == "gate.judge.model"
    assert open_pipeline_judge(parse_config(PIPELINE.format(judge="null")), ws, reg, None) is None


@pytest.mark.parametrize("judge, field", [
    ("{model: j, min_win_rate: 1.5}", "gate.judge.min_win_rate"),
    ("{model: j, min_win_rat: 0.5}", "gate.judge.min_win_rat"),
    ("{min_win_rate: 0.5}", "gate.judge.model"),
    ("{model: j, rationale_tokens: -1}", "gate.judge.rationale_tokens"),
    ("{model: j, rubric: ''}", "gate.judge.rubric"),
])
def test_bad_gate_judge_fields_are_named(judge: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(PIPELINE.format(judge=judge), "p.yaml")
    assert field in str(info.value)


def test_open_setup_checks_before_loading(registry: Registry) -> None:
    with pytest.raises(StudioError) as info:
        open_setup(registry, "default", "anything", min_win_rate=-0.1, where="--judge")
    assert info.value.where == "--judge-min-win-rate"
