"""Config validation: every example in configs/ is valid; mistakes name file, field and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config, parse_config
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
