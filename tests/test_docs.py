"""Documentation stays in step with the code: every config key is documented, README commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from engine.config import StudioConfig

ROOT = Path(__file__).resolve().parent.parent


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        subs = _models_in(field.annotation)
        if not subs:  # a leaf key
            out.append(prefix + name)
        for sub in subs:
            out.extend(_fields(sub, prefix + name + "."))
    return out


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def test_every_config_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f for f in _fields(StudioConfig)
               if not re.search(r"`([\w]+\.)*" + re.escape(f.split(".")[-1]) + "`", doc)]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["bash scripts/quickstart.sh", "bash scripts/test.sh"]
    for cmd in commands:
        assert (ROOT / cmd.split()[1]).is_file()


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_code_map_names_every_package_and_top_level_module() -> None:
    text = (ROOT / "docs" / "concepts.md").read_text()
    code_map = text[text.index("## Code map"):]
    names = [p.name for p in (ROOT / "engine").iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    names += [p.stem for p in (ROOT / "engine").glob("*.py") if p.stem not in ("__init__", "__main__")]
    missing = [n for n in sorted(names) if f"`{n}/`" not in code_map and f"`{n}`" not in code_map
               and f"`{n}.py`" not in code_map]
    assert missing == []


def test_every_source_path_named_in_the_docs_exists() -> None:
    """Files move; a doc that still names the old path sends a reader nowhere."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    stale = []
    for doc in docs:
        for path in sorted(set(re.findall(r"\b((?:engine|scripts|tests)/[\w/.-]+\.(?:py|sh|jsonl))\b",
                                          doc.read_text()))):
            if not (ROOT / path).exists():
                stale.append(f"{doc.name}: {path}")
    assert stale == []
