"""The import layers of engine/ (docs/concepts.md, "Code map"): no cycles, no upward imports, and
only a few function-local imports, each with its reason.

A small AST walk over every module of the package; every `import` / `from … import` of an engine
module counts, wherever it is (module level, inside a function, under `if TYPE_CHECKING:`).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Module (or package) name -> layer. A module belongs to its longest listed prefix; a module that
# matches none (other than the bare package) fails the test, so a new top-level module or package
# has to be placed here, in docs/concepts.md and in DESIGN.md first.
LAYERS: dict[str, int] = {
    # 0 foundation
    "engine": 0, "engine.errors": 0, "engine.atomic": 0, "engine.hashing": 0, "engine.console": 0,
    "engine.records": 0, "engine.offline": 0, "engine.workspace": 0, "engine.registry": 0,
    "engine.config": 0, "engine.manifest": 0, "engine.gpu_libs": 0,
    # 1 core services
    "engine.privacy": 1, "engine.models": 1,
    # 2 producing and scoring text
    "engine.generation": 2, "engine.grading": 2,
    # 3 data refiner
    "engine.data": 3,
    # 4 trainer
    "engine.train": 4,
    # 5 eval & diff
    "engine.eval": 5,
    # 6 serving and the product metrics it exports
    "engine.serve": 6, "engine.metrics": 6,
    # 7 whole-product flows and views
    "engine.flow": 7, "engine.repro": 7, "engine.web": 7,
    # 8 the command line
    "engine.cli": 8, "engine.__main__": 8,
}
# Same-or-lower layer, yet kept apart: eval depends on generation, grading and models, not on the
# refiner or the trainer (it reads their outputs from disk and the registry).
APART = (("engine.eval", "engine.data"), ("engine.eval", "engine.train"))
MAX_LINES = 600  # a module owns one thing
# At most this many function-local imports of engine modules (each needs a reason, see below).
MAX_LOCAL_IMPORTS = 40
# What `studio --help` must not import: slow to load (start-up time), and the ML libraries read
# cache variables at import time, so they are imported inside a verb, after its job's confinement.
HEAVY = ("torch", "transformers", "datasets", "trl", "peft", "accelerate", "scipy", "numpy",
         "pydantic", "fastapi", "uvicorn", "httpx", "datasketch", "cryptography", "jinja2")
# The comment on a function-local import (same line, or the comment lines right above it or above
# the block of imports it belongs to) that says why it is local.
REASON = re.compile(r"#\s*lazy:\s*\S")


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    local: bool          # inside a function body
    type_only: bool      # under `if TYPE_CHECKING:`


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for path in sorted((root / "engine").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return LAYERS["engine"] if module == "engine" else None


def _targets(mods: dict[str, Path], source: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:  # relative import
            base = source.split(".")
            if mods[source].name != "__init__.py":
                base = base[:-1]
            base = base[:len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:  # `from pkg import submodule` imports the submodule
            sub = f"{module}.{alias.name}"
            names.append(sub if sub in mods else module)
    out = []
    for name in names:
        if name != "engine" and not name.startswith("engine."):
            continue
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        if name != source:
            out.append(name)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(root: Path = ROOT) -> list[Import]:
    mods = modules(root)
    found: list[Import] = []
    for source, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))

        def walk(node: ast.AST, local: bool, type_only: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    walk(child, True, type_only)
                elif isinstance(child, ast.If) and _is_type_checking(child.test):
                    walk(child, local, True)
                elif isinstance(child, (ast.Import, ast.ImportFrom)):
                    found.extend(Import(source, t, child.lineno, local, type_only)
                                 for t in _targets(mods, source, child))
                else:
                    walk(child, local, type_only)

        walk(tree, False, False)
    return found


def cycles(edges: list[Import]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        graph[e.source].add(e.target)
    nodes = sorted({e.source for e in edges} | {e.target for e in edges})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if layer_of(m) is None]
    assert not unplaced, f"place these modules in LAYERS (and the code map): {unplaced}"


def test_no_import_cycles() -> None:
    runtime = [e for e in imports() if not e.type_only]
    found = cycles(runtime)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_upward_imports() -> None:
    upward = [f"{e.source}:{e.line} (layer {layer_of(e.source)}) imports {e.target} "
              f"(layer {layer_of(e.target)})"
              for e in imports() if (layer_of(e.target) or 0) > (layer_of(e.source) or 0)]
    assert not upward, "a module may import only from its own layer or a lower one:\n" + \
        "\n".join(upward)


def test_eval_does_not_import_the_refiner_or_the_trainer() -> None:
    bad = [f"{e.source}:{e.line} imports {e.target}" for e in imports() for a, b in APART
           if (e.source + ".").startswith(a + ".") and (e.target + ".").startswith(b + ".")]
    assert not bad, bad


def test_libraries_never_import_the_cli() -> None:
    bad = [f"{e.source}:{e.line}" for e in imports()
           if e.target.startswith("engine.cli") and not e.source.startswith("engine.cli")
           and e.source != "engine.__main__"]
    assert not bad, bad


def test_function_local_imports_are_few_and_explained() -> None:
    local = [e for e in imports() if e.local and not e.type_only]
    statements = sorted({(e.source, e.line) for e in local})
    mods = modules()
    unexplained = []
    for source, line in statements:
        lines = mods[source].read_text(encoding="utf-8").splitlines()
        comment = [lines[line - 1]]
        k = line - 2
        # the comment lines right above it, or above the block of imports it belongs to
        while k >= 0 and lines[k].strip().startswith(("#", "from ", "import ")):
            comment.append(lines[k])
            k -= 1
        if not any(REASON.search(text) for text in comment):
            unexplained.append(f"{mods[source].relative_to(ROOT)}:{line}")
    assert not unexplained, ("a function-local engine import needs a `# lazy: <reason>` comment "
                             "(same line or right above):\n" + "\n".join(unexplained))
    assert len(statements) <= MAX_LOCAL_IMPORTS, (
        f"{len(statements)} function-local engine imports (at most {MAX_LOCAL_IMPORTS}): import at "
        "module level unless the import is for an optional heavy dependency or CLI start-up time")


def test_every_module_says_what_it_owns_and_stays_small() -> None:
    missing, long = [], []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if not (ast.get_docstring(ast.parse(text)) or "").strip():
            missing.append(name)
        if text.count("\n") > MAX_LINES:
            long.append(f"{name} ({text.count(chr(10))} lines)")
    assert not missing, f"modules without a docstring saying what they own: {missing}"
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_cli_imports_no_heavy_library() -> None:
    code = ("import json, sys\nimport engine.cli\n"
            f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120, check=True)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("source, expect", [
    ("import engine.hashing\n", ["engine.hashing"]),
    ("from engine import offline\n", ["engine.offline"]),
    ("from engine.config import StudioConfig\n", ["engine.config"]),
    ("from . import errors\n", ["engine.errors"]),
    ("def f():\n    from engine.errors import StudioError  # lazy: test\n", ["engine.errors"]),
])
def test_the_walk_sees_every_kind_of_import(tmp_path: Path, source: str, expect: list[str]) -> None:
    """The checker itself: module-level, `from package import module`, relative and
    function-local imports."""
    fake = tmp_path / "engine"
    fake.mkdir()
    for name in ("__init__", "errors", "hashing", "offline", "config"):
        (fake / f"{name}.py").write_text("")
    (fake / "probe.py").write_text(source)
    assert [e.target for e in imports(tmp_path) if e.source == "engine.probe"] == expect


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = [Import("engine.errors", "engine.hashing", 1, False, False),
             Import("engine.hashing", "engine.errors", 1, True, False)]
    assert cycles(edges) == [["engine.errors", "engine.hashing"]]
