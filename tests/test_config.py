"""Config validation: every example in configs/ is valid; mistakes name file, field and line; the
table of train keys → TRL arguments is complete and the same in code and docs."""

from __future__ import annotations

import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from engine.config import (NO_TRL_ARGUMENT, TRL_ARGUMENTS, StudioConfig, TrainSpec, load_config,
                           parse_config)
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def studio(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_there_are_example_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"quickstart.yaml", "refine_tickets.yaml", "sft_lora.yaml",
                                         "eval.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.path == path.resolve()


def test_validate_accepts_every_config_file() -> None:
    res = studio("validate", *map(str, CONFIGS))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("ok") == len(CONFIGS)


def test_validate_rejects_bad_type_with_field_path_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "configs" / "x.yaml"
    bad.parent.mkdir()
    text = (ROOT / "configs" / "sft_lora.yaml").read_text().replace("r: 16", "r: sixteen")
    bad.write_text(text)
    res = studio("validate", "configs/x.yaml", cwd=tmp_path)
    assert res.returncode == 2
    assert "configs/x.yaml: train.lora.r: Input should be a valid integer" in res.stderr
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "sixteen" in t)
    assert f"(line {line})" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("kind: refine\nrefine:\n  dataset: d\n  inputs: [{path: a.jsonl, format: openai_jsonl}]\n"
                     "  dedupe: {exact: true}\n", "c.yaml")
    assert "c.yaml: refine.dedupe: unknown key (line 5)" in str(info.value)


def test_kind_requires_its_sections() -> None:
    with pytest.raises(ConfigError, match="kind 'pipeline' needs section"):
        parse_config("kind: pipeline\n", "p.yaml")
    with pytest.raises(ConfigError, match="train.base_model and train.dataset"):
        parse_config("kind: train\ntrain: {epochs: 1}\n", "t.yaml")


def test_list_fields_report_their_index() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("kind: refine\nrefine:\n  dataset: d\n  inputs:\n    - {path: a, format: openai_jsonl}\n"
                     "    - {path: b, format: xml}\n", "r.yaml")
    assert "refine.inputs[1].format" in str(info.value)
    assert "(line 6)" in str(info.value)


def test_yaml_alias_bombs_are_refused_fast() -> None:
    """Nested aliases ("billion laughs") expand exponentially: refused from the node graph,
    before anything walks the expanded document; a config that uses a few aliases still loads."""
    import time

    bomb = ["kind: refine", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb += ["refine: {dataset: d, inputs: [{path: a.jsonl, format: openai_jsonl}], x: *a8}"]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100,000 values through YAML aliases"):
        parse_config("\n".join(bomb) + "\n", "bomb.yaml")
    assert time.perf_counter() - t0 < 2.0
    shared = ("kind: refine\nrefine:\n  dataset: d\n  inputs:\n"
              "    - &in {path: a.jsonl, format: openai_jsonl}\n    - *in\n    - {path: b, format: xml}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(shared, "r.yaml")
    assert "refine.inputs[2].format" in str(info.value) and "(line 7)" in str(info.value)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("kind: refine\nrefine:\n  dataset: [unclosed\n")
    res = studio("validate", str(p))
    assert res.returncode == 2
    assert "broken.yaml:" in res.stderr and "not valid YAML" in res.stderr


def test_missing_config_file() -> None:
    res = studio("validate", "does-not-exist.yaml")
    assert res.returncode == 2
    assert "does-not-exist.yaml: config file not found" in res.stderr


def test_wrong_kind_for_verb(tmp_path: Path) -> None:
    res = studio("--workspace", str(tmp_path / "ws"), "train", str(ROOT / "configs" / "eval.yaml"))
    assert res.returncode == 2
    assert "needs a config of kind 'train'" in res.stderr
    assert "studio eval" in res.stderr


def test_relative_paths_resolve_against_config_folder() -> None:
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    assert cfg.refine is not None
    assert cfg.resolve_path(cfg.refine.inputs[0].path) == (ROOT / "data" / "raw" / "tickets.csv").resolve()


# ------------------------------------------------------------- train keys → TRL / transformers
def _trl_section() -> str:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    start = doc.index("## How train keys map to TRL / transformers")
    end = doc.index("\n## ", start + 1)
    return doc[start:end]


def test_docs_table_of_train_keys_matches_the_code() -> None:
    rows: dict[str, tuple[str, ...]] = {}
    for line in _trl_section().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            key = cells[0].strip("`")
            assert key not in rows, f"{key} is listed twice"
            rows[key] = tuple(a.strip().strip("`") for a in cells[1].split(","))
    assert rows == TRL_ARGUMENTS
    assert list(rows) == list(TRL_ARGUMENTS)  # the same order, so the two read alike
    listed = [line[3:].split("`")[0] for line in _trl_section().splitlines() if line.startswith("- `")]
    assert listed == list(NO_TRL_ARGUMENT)


def test_every_train_key_has_a_decided_trl_mapping() -> None:
    def section(annotation: object) -> type[BaseModel] | None:
        """The sub-section model of a field (LoraSpec, GRPOSpec | None); None for a leaf or a list."""
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(annotation) if a is not type(None)]
            return section(inner[0]) if len(inner) == 1 else None
        return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None

    keys: list[str] = []
    for name, field in TrainSpec.model_fields.items():
        sub = section(field.annotation)
        keys += [f"{name}.{k}" for k in sub.model_fields] if sub else [name]
    assert {"lora.r", "quant.bits", "preference.beta", "grpo.rewards"} <= set(keys)
    assert not set(TRL_ARGUMENTS) & set(NO_TRL_ARGUMENT)
    undecided = [k for k in keys if k not in TRL_ARGUMENTS and k not in NO_TRL_ARGUMENT]
    assert undecided == [], "add these train keys to TRL_ARGUMENTS or NO_TRL_ARGUMENT"
    top_level = set(StudioConfig.model_fields) - {"train"}
    assert set(TRL_ARGUMENTS) - set(keys) <= top_level  # only `seed` lives outside train:
    assert set(NO_TRL_ARGUMENT) <= set(keys)
    assert all(names for names in TRL_ARGUMENTS.values())


def test_config_package_is_the_foundation_layer() -> None:
    """engine/config imports nothing from engine but engine.errors and itself, never inside a function."""
    import ast

    import engine.config

    for path in sorted((ROOT / "engine" / "config").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name == "engine" or name.startswith("engine."):
                    assert name == "engine.errors" or name.startswith("engine.config."), (path.name, name)
                    assert node.col_offset == 0, f"{path.name}: function-local import of {name}"
    assert all(hasattr(engine.config, name) for name in engine.config.__all__)
