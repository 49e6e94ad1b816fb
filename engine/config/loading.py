"""YAML loading: parse_config and load_config, with errors that name file, field path and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from engine.config.pipeline import StudioConfig
from engine.errors import ConfigError


# what a config may expand to through YAML aliases (a real config has a few hundred nodes; a
# "billion laughs" document of ten short lines has billions)
MAX_NODES = 100_000


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in the document with every alias expanded, computed once per distinct node."""
    key = id(node)
    if key not in memo:
        memo[key] = 0  # a node that contains itself (a recursive alias) counts once
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        memo[key] = 1 + sum(_expanded_size(child, memo) for child in children)
    return memo[key]


def _line_index(node: yaml.Node, path: tuple[Any, ...] = (),
                seen: set[int] | None = None) -> dict[tuple[Any, ...], int]:
    """Map every key path in a YAML document to its 1-based line (keys point at the key). A node
    reached again through an alias is not walked again (its fields keep their first path's lines;
    an error inside it points at the line of the key that names the alias)."""
    seen = set() if seen is None else seen
    index = {path: node.start_mark.line + 1}
    if id(node) in seen:
        return index
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, key_node.value)
            index.update(_line_index(value_node, key, seen))
            index[key] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index.update(_line_index(item, (*path, i), seen))
    return index


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    probe = tuple(str(x) if not isinstance(x, int) else x for x in loc)
    while probe and probe not in lines:
        probe = probe[:-1]
    return lines.get(probe)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def parse_config(text: str, file: str = "<config>") -> StudioConfig:
    try:
        node = yaml.compose(text)
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise ConfigError(f"the config expands to more than {MAX_NODES:,} values through YAML "
                              "aliases (*name)", where=file,
                              hint="write the repeated parts out, or use fewer nested aliases")
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError("the config is nested too deeply", where=file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from None
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping (key: value)", where=file,
                          hint="start from one of the examples in configs/")
    lines = _line_index(node) if node is not None else {}
    try:
        return StudioConfig.model_validate(data)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = _field_path(loc) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            msg = msg.removeprefix("Value error, ")
            line = _line_of(loc, lines)
            messages.append(f"{file}: {field}: {msg}" + (f" (line {line})" if line else ""))
        raise ConfigError(
            "\n".join(messages),
            hint="fix the field(s) above; every key is described in docs/configuration.md",
        ) from None


def load_config(path: str | Path) -> StudioConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc.__class__.__name__}", where=str(path)) from None
    cfg = parse_config(text, str(path))
    cfg._path = p.resolve()
    return cfg
