"""Tenant isolation: the path policy every path a job opens from its config goes through.

`path_guard(ws, tenant)` is the one check: given the exact path a job will open (the config's
`resolve_path` result: relative to the config file, symlinks followed, no `..` after a missing
folder), it refuses another tenant's directory (also its tmpfs view while one of its jobs runs)
and the workspace's internals (registry, audit log, keys, anything in the workspace that is not
this tenant's folder or the shared model store). A directory is checked with every symlink inside
it. `jobs.begin` binds the guard to the job's config, so every later `cfg.resolve_path` — refine
inputs, decontam files, training data, reward and grader modules, templates — is checked where it
is opened, and `check_config_paths` checks every path-like string of the config up front.

What it does not stop: a symlink swapped between the check and the open by someone who can write
to the folder the config names (only the tenant itself, or root); that is outside this model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import StudioError
from engine.privacy.keys import workspace_id
from engine.privacy.view import view_root
from engine.workspace import Workspace

if TYPE_CHECKING:
    from engine.config import StudioConfig


def _strings(obj: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(obj, str) and obj:
        yield where, obj


MAX_DIR_ENTRIES = 100_000  # a directory input is walked for symlinks up to this many entries


def _owner(path: Path, ws: Workspace) -> tuple[str, str | None] | None:
    """("tenant", name) for a path inside a tenant folder or view, ("internal", None) for the
    workspace's own files, None for a path outside the workspace (or in the model store)."""
    for root in ((ws.root / "tenants").resolve(), (view_root() / workspace_id(ws)).resolve()):
        if path == root:
            return ("tenant", None)
        if path.is_relative_to(root):
            return ("tenant", path.relative_to(root).parts[0])
    root = ws.root.resolve()
    if path == root or (path.is_relative_to(root) and not path.is_relative_to(root / "models")):
        return ("internal", None)
    return None


def path_guard(ws: Workspace, tenant: str | None, where: str | None = None
               ) -> Callable[[Path, str], None]:
    """The path policy of one job of `tenant` (None: a job of no tenant, which may read no tenant
    folder): a callable(resolved path, config value) that raises StudioError to refuse it."""

    def refuse(value: str, owner: tuple[str, str | None]) -> None:
        kind, name = owner
        what = (f"the directory of another tenant ({name or 'the tenants folder'})"
                if kind == "tenant" else "the workspace's internal files (registry, audit log, keys)")
        raise StudioError(
            f"path {value!r} points into {what}; a job of tenant {tenant!r} may only read its "
            "own data", where=where,
            hint="copy the data into this tenant's raw/ folder or run the job as that tenant")

    def check(path: Path, value: str) -> None:
        owner = _owner(path, ws)
        if owner is not None and owner != ("tenant", tenant):
            refuse(value, owner)

    def guard(path: Path, value: str) -> None:
        check(path, value)
        if path.is_dir():  # a folder input: every symlink in it, wherever it points
            seen = 0
            for folder, dirs, files in os.walk(path):
                for name in dirs + files:
                    seen += 1
                    entry = Path(folder) / name
                    if entry.is_symlink():
                        check(Path(os.path.realpath(entry)), f"{value} ({entry.name})")
                if seen > MAX_DIR_ENTRIES:
                    raise StudioError(f"path {value!r} is a folder of more than {MAX_DIR_ENTRIES} "
                                      "entries", where=where, hint="name the files instead")

    return guard


def _path_like(value: str) -> bool:
    return ("/" in value or "\\" in value or value.startswith((".", "~"))) and "\n" not in value


def check_config_paths(ws: Workspace, cfg: StudioConfig) -> None:
    """Check every path-like string of the config with the job's path policy (StudioError naming
    the field), then bind the policy to `cfg` so that every later `resolve_path` is checked too."""
    where = str(cfg.path) if getattr(cfg, "path", None) else None
    guard = path_guard(ws, getattr(cfg, "tenant", None), where)
    for field, value in _strings(cfg.model_dump(mode="json")):
        if not _path_like(value) or len(value) > 4096 or "\x00" in value:
            continue  # a plain name, not a path
        try:
            path = cfg.resolve_path(value)
        except (OSError, RuntimeError, ValueError):
            continue
        try:
            guard(path, value)
        except StudioError as exc:
            raise StudioError(f"{field}: {exc.what}", where=where, hint=exc.hint) from None
    cfg.guard_paths(guard)
