"""lm-eval-harness as a suite task: `studio eval` runs local lm-eval tasks in-process for the tiny
base model and a LoRA run, keeps one row per lm-eval sample, and `studio diff` pairs the two
evals item by item. The per-item scores are lm-eval's own (their mean is lm-eval's acc), and the
multiple-choice data loads offline from a dataset folder staged like a hub copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.config import parse_config
from engine.errors import ConfigError, StudioError
from engine.eval.diff import diff_evals
from engine.eval.proof import differing_sections, read_proof
from engine.eval.report import BUCKET_TITLES
from engine.eval.suite import load_suite
from engine.models.store import import_model
from engine.registry import Registry
from engine.workspace import Workspace
from tests.helpers import random_lora, studio

lm_eval = pytest.importorskip("lm_eval")

QUIZ = [("The sky is", ["blue", "green", "loud"], 0), ("Two plus two is", ["four", "five"], 0),
        ("My router light is", ["orange", "purple", "red"], 1),
        ("Please restart the", ["hub", "moon", "river"], 0), ("Ice is", ["cold", "hot"], 0),
        ("Cats say", ["meow", "woof", "moo"], 0), ("The sun rises in the", ["east", "west"], 0),
        ("Water boils at", ["100 degrees", "10 degrees", "1 degree"], 0),
        ("A week has", ["seven days", "six days"], 0), ("Bees make", ["honey", "milk"], 0),
        ("Snow is", ["white", "black", "blue"], 0), ("Fish live in", ["water", "trees"], 0)]
RECALL = [{"question": f"Repeat the word {w}:", "answer": w}
          for w in ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta")]


def _stage(root: Path) -> None:
    """Task YAMLs in lm_tasks/; quiz data staged as a hub copy in datasets/acme/quiz (README
    configs + parquet: what `huggingface-cli download` leaves), recall data as a local JSONL."""
    import datasets

    quiz = root / "datasets" / "acme" / "quiz"
    (quiz / "main").mkdir(parents=True)
    datasets.Dataset.from_list([{"question": q, "choices": c, "answer": a} for q, c, a in QUIZ]
                               ).to_parquet(str(quiz / "main" / "test-00000-of-00001.parquet"))
    (quiz / "README.md").write_text("---\nconfigs:\n- config_name: main\n  data_files:\n"
                                    "  - split: test\n    path: main/test-*\n---\n")
    tasks = root / "lm_tasks"
    tasks.mkdir()
    (tasks / "recall.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECALL))
    (tasks / "studio_quiz.yaml").write_text("""task: studio_quiz
dataset_path: acme/quiz
dataset_name: main
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    (tasks / "studio_recall.yaml").write_text(f"""task: studio_recall
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tasks / 'recall.jsonl'}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 5
  do_sample: false
metric_list:
  - metric: exact_match
""")


CONFIG = {"kind": "eval", "eval": {"models": ["tiny", "run-tuned"], "generation": {"batch_size": 4},
          "suite": {"name": "bench", "tasks": [
              {"name": "quiz", "lm_eval": {"tasks": ["studio_quiz"], "include_path": "lm_tasks",
                                           "dataset_dir": "datasets"}},
              {"name": "recall", "limit": 6,
               "lm_eval": {"tasks": ["studio_recall"], "include_path": "lm_tasks"}}]}}}


def _lora_run(ws: Workspace, registry: Registry, model_dir: Path, run_id: str) -> Path:
    run_dir = ws.run_dir("default", run_id)
    random_lora(model_dir, run_dir / "adapter", seed=5, rank=4, alpha=8, targets="all-linear",
                scale=0.2)
    registry.put_run(run_id, "default", "sft", "tiny", "tickets@v1", run_dir)
    registry.finish_run(run_id, "succeeded", {})
    return run_dir / "adapter"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    """`studio eval` of the two-task suite for the base model and the LoRA run (one CLI call)."""
    root = tmp_path_factory.mktemp("lm-suite")
    _stage(root)
    ws = Workspace(root / "ws").ensure()
    registry = Registry(ws.registry_path)
    import_model(ws, registry, str(tiny_model_dir), "tiny")
    adapter = _lora_run(ws, registry, tiny_model_dir, "run-tuned")
    (root / "bench.yaml").write_text(yaml.safe_dump(CONFIG))
    res = studio("--workspace", str(ws.root), "eval", "bench.yaml", "--json", cwd=root,
                 home=root / "home")
    assert res.returncode == 0, res.stderr[-3000:]
    evals: dict[tuple[str, str], Path] = {}
    for e in json.loads(res.stdout)["evals"]:
        evals[(e["task"], e["model_ref"])] = Path(e["path"])
    assert len(evals) == 4
    return {"root": root, "ws": ws, "registry": registry, "evals": evals, "adapter": adapter,
            "model_dir": Path(registry.get_model("tiny")["path"])}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "outputs.jsonl").read_text().splitlines()]


def _summary(path: Path) -> dict[str, Any]:
    return json.loads((path / "summary.json").read_text())


@pytest.mark.parametrize("task, lm_task, metric, n", [("quiz", "studio_quiz", "acc", len(QUIZ)),
                                                      ("recall", "studio_recall", "exact_match", 6)])
def test_rows_are_lm_evals_samples_and_scores(evaluated: dict, task: str, lm_task: str,
                                              metric: str, n: int) -> None:
    for model in ("tiny", "run-tuned"):
        path = evaluated["evals"][(task, model)]
        assert {"summary.json", "outputs.jsonl", "proof.json"} <= {p.name for p in path.iterdir()}
        rows, summary = _rows(path), _summary(path)
        assert [r["item_id"] for r in rows] == [f"{lm_task}:{i}" for i in range(n)]
        assert all(r["score"] == r["lm_eval"]["metrics"][metric] for r in rows)
        own = summary["lm_eval"]["results"][lm_task][f"{metric},none"]
        assert summary["score"] == pytest.approx(own, abs=1e-12)  # mean of items == lm-eval's
        assert summary["n"] == n and summary["grader"]["metrics"] == {lm_task: metric}
        assert summary["graders"][0]["name"] == metric
        assert summary["dataset"].startswith(f"lm_eval:{lm_task}@v")
        assert evaluated["registry"].get_eval(summary["eval_id"])["summary"]["task"] == task
    if task == "quiz":  # the answer is the most likely choice; the reference the target's text
        row = _rows(evaluated["evals"][(task, "tiny")])[2]
        assert row["reference"] == "purple" and row["prompt"][0]["content"] == "My router light is"
        assert len(row["lm_eval"]["resps"]) == 3 and row["meta"]["lm_eval_task"] == lm_task
        assert "acc_norm" in {g["grader"] for g in row["grades"]}
    else:
        assert all(isinstance(r["output"], str) for r in _rows(evaluated["evals"][(task, "tiny")]))


def test_the_adapter_is_applied_and_equals_lm_evals_own_run(evaluated: dict,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval's `hf` model run directly on base + adapter gives the tuned eval's numbers."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    root = evaluated["root"]
    monkeypatch.chdir(root / "datasets")
    own = simple_evaluate(model="hf", model_args={
        "pretrained": str(evaluated["model_dir"]), "peft": str(evaluated["adapter"]),
        "dtype": "float32", "device": "cpu"}, tasks=["studio_quiz"], batch_size=4,
        task_manager=TaskManager(include_path=str(root / "lm_tasks")), log_samples=True,
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    tuned = {r["item_id"]: r for r in _rows(evaluated["evals"][("quiz", "run-tuned")])}
    base = {r["item_id"]: r for r in _rows(evaluated["evals"][("quiz", "tiny")])}
    for s in own["samples"]["studio_quiz"]:
        row = tuned[f"studio_quiz:{s['doc_id']}"]
        assert row["score"] == s["acc"]
        lls = [r[0][0] for r in row["lm_eval"]["resps"]]
        assert lls == pytest.approx([r[0][0] for r in s["resps"]], abs=1e-4)
        assert lls != pytest.approx([r[0][0] for r in base[row["item_id"]]["lm_eval"]["resps"]],
                                    abs=1e-3)  # the adapter changed the model
    assert _summary(evaluated["evals"][("quiz", "run-tuned")])["score"] == \
        own["results"]["studio_quiz"]["acc,none"]


def test_studio_diff_pairs_the_benchmark_items(evaluated: dict) -> None:
    evals, root = evaluated["evals"], evaluated["root"]
    for task, n in (("quiz", len(QUIZ)), ("recall", 6)):
        base, tuned = evals[(task, "tiny")], evals[(task, "run-tuned")]
        assert [r["item_hash"] for r in _rows(base)] == [r["item_hash"] for r in _rows(tuned)]
        # the two records differ in the model only (same items, settings and environment)
        assert differing_sections(read_proof(base), read_proof(tuned)) == ["model"]
        res = diff_evals(base, tuned, root / f"diff-{task}", require="none",
                         slice_key="lm_eval_task")
        overall = res.stats["overall"]
        assert 0.0 <= overall["p_value"] <= 1.0 and overall["score_type"] == "binary"
        pairs = [json.loads(line) for line in res.pairs_path.read_text().splitlines()]
        lm_task = "studio_quiz" if task == "quiz" else "studio_recall"
        assert sorted(p["item_id"] for p in pairs) == sorted(f"{lm_task}:{i}" for i in range(n))
        assert sum(overall[b] for b in ("fixed", "broke", "both_right", "both_wrong")) == n
        html = res.report_path.read_text()
        assert all(f'{lm_task}:{i}' in html for i in range(n))  # every item in its bucket
        for bucket in {p["bucket"] for p in pairs}:
            assert BUCKET_TITLES[bucket] in html
        if task == "quiz":  # the adapter moved some answers both ways (seeded: fixed 1, broke 1)
            assert overall["fixed"] >= 1 and overall["broke"] >= 1
        assert list(res.stats["slices"]) == [lm_task]
    # and through the CLI, by eval id
    ids = [_summary(evals[("quiz", m)])["eval_id"] for m in ("tiny", "run-tuned")]
    res = studio("--workspace", str(evaluated["ws"].root), "diff", *ids, "--require", "none",
                 "--json", cwd=root, home=root / "home")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["stats"]["overall"]["p_value"] is not None and Path(out["report"]).is_file()


# ------------------------------------------------------------------------------------- config
def _cfg(task: dict[str, Any]) -> str:
    return yaml.safe_dump({"kind": "eval", "eval": {"models": ["tiny"], "suite": {
        "tasks": [{"name": "bench", **task}]}}})


@pytest.mark.parametrize("task, field, message", [
    ({"path": "x.jsonl", "lm_eval": {"tasks": ["arc_easy"]}}, "eval.suite.tasks[0]",
     "remove path"),
    ({"graders": [{"type": "contains"}], "lm_eval": {"tasks": ["arc_easy"]}},
     "eval.suite.tasks[0]", "remove graders"),
    ({"lm_eval": {"tasks": []}}, "eval.suite.tasks[0].lm_eval.tasks", "at least 1 item"),
    ({"lm_eval": {"tasks": ["arc easy"]}}, "eval.suite.tasks[0].lm_eval.tasks",
     "not an lm-eval task name"),
    ({"lm_eval": {"tasks": ["arc_easy"], "num_fewshot": -1}},
     "eval.suite.tasks[0].lm_eval.num_fewshot", "greater than or equal to 0"),
    ({"lm_eval": {"tasks": ["arc_easy"], "shots": 5}}, "eval.suite.tasks[0].lm_eval.shots",
     "unknown key"),
])
def test_config_errors_name_the_field(task: dict, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_cfg(task), "bench.yaml")
    text = str(info.value)
    assert f"bench.yaml: {field}: " in text and message in text, text


def test_unknown_task_and_missing_folder_are_named(tmp_path: Path, registry) -> None:
    cfg = parse_config(_cfg({"lm_eval": {"tasks": ["no_such_task_xyz"]}}))
    with pytest.raises(StudioError) as info:
        load_suite(cfg.eval, tmp_path, registry, "default")
    assert info.value.where == "eval.suite.tasks[0].lm_eval.tasks"
    assert "no_such_task_xyz" in info.value.what
    cfg = parse_config(_cfg({"lm_eval": {"tasks": ["arc_easy"], "include_path": "missing"}}))
    with pytest.raises(StudioError) as info:
        load_suite(cfg.eval, tmp_path, registry, "default")
    assert info.value.where == "eval.suite.tasks[0].lm_eval.include_path"


def test_task_folders_go_through_the_path_policy(tmp_path: Path, workspace: Workspace,
                                                 registry: Registry) -> None:
    from engine.privacy.isolation import check_config_paths

    other = workspace.tenant_dir("other") / "raw" / "bench"
    other.mkdir(parents=True)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.yaml").write_text(
        f"task: stolen\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {other / 'data.jsonl'}\ntest_split: test\noutput_type: generate_until\n"
        "doc_to_text: x\ndoc_to_target: y\n")
    (other / "data.jsonl").write_text("{}\n")
    config = tmp_path / "bench.yaml"
    config.write_text(_cfg({"lm_eval": {"tasks": ["stolen"], "include_path": "tasks"}}))
    from engine.config import load_config

    cfg = load_config(config)
    check_config_paths(workspace, cfg)  # what `studio eval` does when its job begins
    with pytest.raises(StudioError) as info:
        load_suite(cfg.eval, tmp_path, registry, "default", cfg.resolve_path)
    assert "another tenant" in info.value.what and "t.yaml" in info.value.what
    assert info.value.where == "eval.suite.tasks[0].lm_eval.include_path"


def test_unstaged_benchmark_data_is_a_clear_error(workspace: Workspace, registry: Registry,
                                                  tiny_model_dir: Path, tmp_path: Path) -> None:
    """Offline, a built-in task whose data was not staged stops with the field and a hint."""
    from engine.eval.suite import run_suite

    import_model(workspace, registry, str(tiny_model_dir), "tiny")
    (tmp_path / "empty").mkdir()
    cfg = parse_config(_cfg({"lm_eval": {"tasks": ["arc_easy"], "dataset_dir": "empty"}}))
    with pytest.raises(StudioError) as info:
        run_suite(cfg.eval, workspace, registry, tenant="default", model_ref="tiny",
                  cfg_dir=tmp_path)
    assert info.value.where == "eval.suite.tasks[0].lm_eval.tasks"
    assert "offline" in info.value.what and "dataset_dir" in (info.value.hint or "")
    assert not list(workspace.tenant_dir("default").glob("evals/*"))  # nothing half-written
