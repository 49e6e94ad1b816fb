"""Eval suites in YAML: task items from files and dataset splits, templates, graders, running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from engine.config import EvalSpec, parse_config
from engine.errors import ConfigError, StudioError
from engine.eval.diff import diff_evals
from engine.eval.items import load_items
from engine.eval.run import run_eval
from engine.eval.suite import format_result, grader_labels, load_suite, read_jsonl, run_suite
from engine.hashing import sha256_json
from engine.models.store import import_model
from tests.helpers import make_project, refined_dataset, studio

FIXTURES = Path(__file__).parent / "fixtures" / "suite"
FAQ = "brightwave_faq.jsonl"


def suite_spec(*tasks: dict, **eval_keys) -> EvalSpec:
    return EvalSpec.model_validate({**eval_keys, "suite": {"name": "bw", "tasks": list(tasks)}})


class ScriptedBackend:
    """Answers from a table keyed by the last user message (no describe(): never cached)."""

    def __init__(self, answers: dict[str, str], default: str = "no idea"):
        self.answers, self.default, self.calls = answers, default, 0

    def generate(self, prompts, max_new_tokens, batch_size, progress=None, label="generate"):
        self.calls += 1
        return [self.answers.get(p[-1]["content"], self.default) for p in prompts]


@pytest.fixture
def dataset(tmp_path: Path, workspace, registry, tiny_model_dir: Path) -> dict:
    project = make_project(tmp_path / "proj", tickets=40)
    import_model(workspace, registry, str(tiny_model_dir), "tiny")
    return refined_dataset(project, workspace, registry)


# ------------------------------------------------------------------------------------ config
def _config(tasks_yaml: str) -> str:
    return ("kind: eval\neval:\n  models: [tiny]\n  dataset: brightwave-tickets\n  suite:\n"
            "    tasks:\n" + tasks_yaml)


@pytest.mark.parametrize("tasks_yaml, field, message, line", [
    ("      - {name: a}\n      - {name: a, path: x.jsonl}\n", "eval.suite",
     "task names must be unique (repeated: a)", 5),
    ("      - name: a\n        path: x.jsonl\n        split: eval\n", "eval.suite.tasks[0]",
     "give either path or dataset/split, not both", 7),
    ("      - name: a\n        template: 'Q: {{ item.input }'\n", "eval.suite.tasks[0].template",
     "not a valid Jinja template", 8),
    ("      - name: a\n        graders: [{type: json_field}]\n", "eval.suite.tasks[0].graders[0]",
     "grader type 'json_field' needs: path", 8),
    ("      - name: a\n        sliced_by: [channel]\n", "eval.suite.tasks[0].sliced_by",
     "unknown key", 8),
    ("      - name: 'bad name!'\n", "eval.suite.tasks[0].name", "should match pattern", 7),
    ("      []\n", "eval.suite.tasks", "at least 1 item", 6),
])
def test_suite_yaml_errors_name_the_field_and_line(tasks_yaml: str, field: str, message: str,
                                                    line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(tasks_yaml), "suite.yaml")
    text = str(info.value)
    assert f"suite.yaml: {field}: " in text and message in text, text
    assert f"(line {line})" in text, text


def test_example_suite_config_validates() -> None:
    from engine.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs" / "eval_suite.yaml")
    tasks = cfg.eval.suite.tasks
    assert [t.name for t in tasks] == ["routing", "routing-short-prompt", "guard"]
    assert len(tasks[0].graders) == 3 and tasks[2].guard and tasks[2].path == "builtin:guard"
    assert tasks[2].generation.model_fields_set == {"max_new_tokens"}


# ------------------------------------------------------------------------------------- items
def test_items_from_a_jsonl_file(registry) -> None:
    (task,) = load_suite(suite_spec({"name": "faq", "path": FAQ}), FIXTURES, registry, "default")
    items = list(task)
    assert [it["item_id"] for it in items] == ["faq-refund-window", f"{FAQ}:2", f"{FAQ}:4", "17"]
    prompt_only, flat_meta, chat, evals_format = items
    assert prompt_only["prompt"] == [{"role": "user", "content": prompt_only["prompt"][0]["content"]}]
    assert prompt_only["reference"] == "30 days" and prompt_only["meta"] == {"topic": "refunds"}
    assert flat_meta["meta"] == {"topic": "pairing", "device": "smart plug"}  # extra keys → meta
    assert [m["role"] for m in chat["prompt"]] == ["system", "user"]  # cut before the answer
    assert chat["reference"] == "The router has no internet connection."
    assert evals_format["reference"] == "Shipped" and evals_format["prompt"][0]["role"] == "system"
    assert task.source["ref"] == f"file:{FAQ}" and len(task.source["sha256"]) == 64
    assert task.graders == [EvalSpec().grader] and task.slice_keys == []


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "Is my thermostat on?", "ideal": "yes"', "line is not valid JSON"),
    ('["prompt", "ideal"]', "line must be a JSON object"),
    ('{"prompt": "Reset my router"}', "no 'ideal'/'reference'"),
    ('{"prompt": "a", "input": "b", "ideal": "c"}', "give one of 'prompt' or 'input'"),
    ('{"messages": [{"role": "user", "content": "Hi"}]}', "no assistant answer"),
    ('{"messages": [{"role": "agent", "content": "Hi"}], "ideal": "x"}', "messages[0] needs a role"),
    ('{"prompt": "Refund?", "ideal": {"text": "yes"}}', "must be text"),
    ('{"prompt": "Refund?", "ideal": "yes", "meta": "refunds"}', "'meta' must be an object"),
    ('{"id": "a", "prompt": "x", "ideal": "y"}', "duplicate id (first on line 1)"),
])
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "tickets.jsonl"
    path.write_text('{"id": "a", "prompt": "Where is my order?", "ideal": "Shipped"}\n\n' + line + "\n")
    with pytest.raises(StudioError) as info:
        read_jsonl(path)
    assert message in info.value.what and info.value.where == f"{path}:3"
    assert "thermostat" not in str(info.value) and "Refund" not in str(info.value)  # no customer text


def test_missing_file_and_unknown_builtin(registry, tmp_path: Path) -> None:
    with pytest.raises(StudioError) as info:
        load_suite(suite_spec({"name": "a", "path": "nope.jsonl"}), tmp_path, registry, "default")
    assert info.value.where == "eval.suite.tasks[0].path" and "not found" in info.value.what
    with pytest.raises(StudioError, match="unknown built-in suite"):
        load_suite(suite_spec({"name": "a", "path": "builtin:mmlu"}), tmp_path, registry, "default")
    with pytest.raises(StudioError, match="give it path or dataset"):
        load_suite(suite_spec({"name": "a"}), tmp_path, registry, "default")


def test_items_from_a_dataset_split_pair_with_a_plain_eval(dataset: dict, registry) -> None:
    spec = suite_spec({"name": "routing", "slice_keys": ["channel"]},
                      {"name": "val", "dataset": "brightwave-tickets@v1", "split": "val", "limit": 2},
                      dataset="brightwave-tickets", limit=5)
    routing, val = load_suite(spec, None, registry, "default")
    assert routing.items == load_items(dataset, "eval", 5)  # same ids and hashes as `studio eval`
    assert routing.source == {"ref": "brightwave-tickets@v1", "name": "brightwave-tickets",
                              "version": 1, "sha256": dataset["sha256"], "split": "eval"}
    assert val.items == load_items(dataset, "val", 2) and val.source["split"] == "val"
    assert routing.slice_keys == ["channel"] and all("channel" in it["meta"] for it in routing)
    # the example config's three tasks load on a real refined dataset
    from engine.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs" / "eval_suite.yaml")
    plain, short, guard_task = load_suite(cfg.eval, cfg.path.parent, registry, "default")
    assert [it["item_id"] for it in short] == [it["item_id"] for it in plain]
    for a, b in zip(plain, short):
        assert [m["role"] for m in b["prompt"]] == ["system", "user"]
        assert b["prompt"][1]["content"] == (f"Ticket ({a['meta']['channel']}): "
                                             f"{a['prompt'][-1]['content']}")
    assert len(guard_task) == 40 and guard_task.eval_spec.generation.max_new_tokens == 32
    assert guard_task.eval_spec.generation.batch_size == 16  # the rest from eval.generation


# ---------------------------------------------------------------------------------- templates
def test_template_and_system_wrap_each_item(registry) -> None:
    spec = suite_spec({"name": "faq", "path": FAQ, "system": "Brightwave Home support ({{ item.topic }}).",
                       "template": "Customer question [{{ item.item_id }}]: {{ item.input | trim }}"})
    (task,) = load_suite(spec, FIXTURES, registry, "default")
    first = task.items[0]
    assert first["prompt"] == [
        {"role": "system", "content": "Brightwave Home support (refunds)."},
        {"role": "user", "content": "Customer question [faq-refund-window]: How many days do I have "
                                    "to return a Brightwave thermostat for a refund?"}]
    assert first["item_hash"] == sha256_json({"prompt": first["prompt"], "reference": "30 days"})
    # a template alone keeps the item's own system message; a system alone keeps the turns
    (kept,) = load_suite(suite_spec({"name": "faq", "path": FAQ, "template": "{{ item.input }}!"}),
                         FIXTURES, registry, "default")
    assert kept.items[2]["prompt"][0]["content"] == "You are Brightwave Home's support assistant."
    assert kept.items[2]["prompt"][1]["content"].endswith("orange. What does that mean?!")
    (sys_only,) = load_suite(suite_spec({"name": "faq", "path": FAQ, "system": "Be brief."}),
                             FIXTURES, registry, "default")
    assert [m["content"] for m in sys_only.items[2]["prompt"]][0] == "Be brief."
    assert sys_only.items[0]["prompt"][0] == {"role": "system", "content": "Be brief."}


def test_template_errors_name_the_task_and_item(registry) -> None:
    spec = suite_spec({"name": "faq", "path": FAQ, "template": "{{ item.order_id }}"})
    with pytest.raises(StudioError) as info:
        load_suite(spec, FIXTURES, registry, "default")
    assert info.value.where == "eval.suite.tasks[0].template"
    assert "'faq-refund-window'" in info.value.what and "order_id" in info.value.what
    assert "input" in info.value.hint and "thermostat" not in str(info.value)
    escape = suite_spec({"name": "faq", "path": FAQ,
                         "template": "{{ item.input.__class__.__mro__[1].__subclasses__() }}"})
    with pytest.raises(StudioError, match="sandbox"):
        load_suite(escape, FIXTURES, registry, "default")


def test_item_ids_and_hashes_are_stable(registry, tmp_path: Path) -> None:
    def load(template: str | None = None, folder: Path = FIXTURES) -> list[dict]:
        task = {"name": "faq", "path": FAQ, **({"template": template} if template else {})}
        return load_suite(suite_spec(task), folder, registry, "default")[0].items

    once, again = load(), load()
    assert once == again
    for it in once:
        assert it["item_hash"] == sha256_json({"prompt": it["prompt"], "reference": it["reference"]})
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / FAQ).write_bytes((FIXTURES / FAQ).read_bytes())
    assert load(folder=moved) == once  # ids name the file, not its folder
    templated = load("Q: {{ item.input }}")
    assert [it["item_id"] for it in templated] == [it["item_id"] for it in once]
    assert all(a["item_hash"] != b["item_hash"] for a, b in zip(templated, once))


# ----------------------------------------------------------------------------------- running
def test_several_graders_first_gives_the_score(workspace, registry, tiny_model_dir: Path) -> None:
    import_model(workspace, registry, str(tiny_model_dir), "tiny")
    items = read_jsonl(FIXTURES / FAQ)
    answers = {items[0][0]["prompt"][-1]["content"]: "You have 30 days.",  # contains, not exact
               items[1][0]["prompt"][-1]["content"]: "The Brightwave Home app"}  # both
    spec = suite_spec({"name": "faq", "path": FAQ, "slice_keys": ["topic"], "graders": [
        {"type": "exact_match", "name": "exact"}, {"type": "contains", "name": "contains"},
        {"type": "chrf"}]}, cache=False)
    (res,) = run_suite(spec, workspace, registry, tenant="default", model_ref="tiny",
                       cfg_dir=FIXTURES, backend=ScriptedBackend(answers))
    rows = [json.loads(line) for line in (res.path / "outputs.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == [0.0, 1.0, 0.0, 0.0] and res.score == 0.25
    assert [[g["score"] for g in r["grades"]][:2] for r in rows] == [[0, 1], [1, 1], [0, 0], [0, 0]]
    assert [g["grader"] for g in rows[0]["grades"]] == ["exact", "contains", "chrf"]
    summary = json.loads((res.path / "summary.json").read_text())
    assert summary["task"] == "faq" and summary["suite"] == "bw" and summary["guard"] is False
    assert summary["score"] == 0.25 and summary["grader"]["name"] == "exact"
    assert [(g["name"], g["score"]) for g in summary["graders"][:2]] == [("exact", 0.25),
                                                                        ("contains", 0.5)]
    assert 0.0 < summary["graders"][2]["score"] < 1.0 and summary["graders"][2]["pass_rate"] is None
    assert summary["dataset"] == f"file:{FAQ}" and summary["slice_keys"] == ["topic"]
    assert json.loads((res.path / "proof.json").read_text())["proof_sha256"] == summary["proof_sha256"]
    assert registry.get_eval(res.eval_id)["summary"]["task"] == "faq"
    same = [EvalSpec().grader, EvalSpec().grader.model_copy(update={"name": "strict"}),
            EvalSpec().grader]
    assert grader_labels(same) == ["exact_match#0", "strict", "exact_match#2"]
    assert format_result(res).endswith("tiny scored 0.250 on 4 items  contains 0.500  chrf "
                                       f"{summary['graders'][2]['score']:.3f}")


def test_run_eval_routes_a_suite_one_eval_per_task(workspace, registry, tiny_model_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import_model(workspace, registry, str(tiny_model_dir), "tiny")
    spec = suite_spec({"name": "faq", "path": FAQ}, {"name": "guard", "path": "builtin:guard",
                                                     "guard": True, "limit": 6}, cache=False)
    backend = ScriptedBackend({}, default="42")
    first = run_eval(spec, workspace, registry, tenant="default", model_ref="tiny", dataset={},
                     backend=backend, base_dir=FIXTURES)
    evals = {e["summary"]["task"]: e for e in registry.list_evals("default")}
    assert sorted(evals) == ["faq", "guard"] and backend.calls == 2
    assert first.eval_id == evals["faq"]["eval_id"] and evals["guard"]["summary"]["n"] == 6
    printed = capsys.readouterr().out
    assert "task faq  eval " in printed and "task guard (guard)  eval " in printed


def test_studio_eval_runs_a_two_task_suite(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The real CLI: one eval per (model, task); each task's pair of evals diffs on its own."""
    from engine.registry import Registry
    from engine.workspace import Workspace

    project = make_project(tmp_path / "proj", tickets=40)
    ws = Workspace(tmp_path / "ws").ensure()
    registry = Registry(ws.registry_path)
    import_model(ws, registry, str(tiny_model_dir), "smollm2-135m-instruct")
    refined_dataset(project, ws, registry)
    cfg = yaml.safe_load((project / "configs" / "eval_suite.yaml").read_text())
    tasks = cfg["eval"]["suite"]["tasks"]
    cfg["eval"]["suite"]["tasks"] = [tasks[0], tasks[2]]  # routing + guard
    cfg["eval"]["models"] = ["smollm2-135m-instruct", "smollm2-135m-instruct"]
    (project / "configs" / "suite2.yaml").write_text(yaml.safe_dump(cfg))
    home = tmp_path / "home"
    home.mkdir()
    res = studio("--workspace", str(ws.root), "eval", "configs/suite2.yaml", cwd=project, home=home)
    assert res.returncode == 0, res.stderr
    task_lines = [line for line in res.stdout.splitlines() if line.startswith("task ")]
    assert len(task_lines) == 4, res.stdout
    assert sum(line.startswith("task guard (guard)") for line in task_lines) == 2
    by_task: dict[str, list[dict]] = {}
    for e in registry.list_evals("default"):
        path = Path(e["path"])
        assert {"summary.json", "outputs.jsonl", "proof.json"} <= {p.name for p in path.iterdir()}
        summary = json.loads((path / "summary.json").read_text())
        by_task.setdefault(e["summary"]["task"], []).append(summary | {"path": path})
    assert sorted(by_task) == ["guard", "routing"] and all(len(v) == 2 for v in by_task.values())
    first, second = sorted(by_task["guard"], key=lambda s: s["cache"]["hits"])  # 2nd: all cached
    assert first["n"] == 40 and first["dataset"] == "builtin:guard@v1"
    assert first["settings"]["max_new_tokens"] == 32  # the task's override of eval.generation
    assert by_task["routing"][0]["settings"]["max_new_tokens"] == 16
    assert second["cache"]["hits"] == 40 and second["proof_sha256"] == first["proof_sha256"]
    diff = diff_evals(first["path"], second["path"], tmp_path / "diff", require="not_worse",
                      margin=0.10, slice_key="skill")
    assert diff.gate_passed and diff.stats["overall"]["broke"] == 0
    # 40 items cannot show non-inferiority at 2 points even for identical outputs (95% CI ±0.088)
    assert not diff_evals(first["path"], second["path"], tmp_path / "diff2", require="not_worse",
                          margin=0.02).gate_passed
    assert set(diff.stats["slices"]) == {"arithmetic", "units", "yes_no", "format", "json", "reading"}
