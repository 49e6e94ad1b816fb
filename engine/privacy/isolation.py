"""Tenant isolation: a job for tenant A may not name a path inside tenant B's directory.

Every string in a job config that looks like a path is resolved like the config resolves its
paths (relative to the config file's folder, symlinks followed); if it lands inside
<workspace>/tenants/<other>/ the job is refused before any work starts.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

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


def _resolve(cfg: StudioConfig, value: str) -> Path | None:
    if "\n" in value or len(value) > 4096:
        return None
    if glob.has_magic(value):  # judge a pattern by the folder it starts from
        value = value[: min(value.index(c) for c in "*?[" if c in value)]
        value = value.rsplit("/", 1)[0] if "/" in value else "."
    try:
        return cfg.resolve_path(value)
    except (OSError, RuntimeError, ValueError):
        return None


def check_config_paths(ws: Workspace, cfg: StudioConfig) -> None:
    """StudioError naming the field when a config path resolves into another tenant's directory."""
    # tenant folders, and the tmpfs views of encrypted tenants while one of their jobs runs
    roots = [(Path(ws.root) / "tenants").resolve(),
             (view_root() / workspace_id(ws)).resolve()]
    tenant = getattr(cfg, "tenant", None)
    for field, value in _strings(cfg.model_dump(mode="json")):
        if "/" not in value and "\\" not in value and not value.startswith("."):
            continue  # a plain name, not a path
        path = _resolve(cfg, value)
        if path is None:
            continue
        owners = set()
        for root in roots:
            try:
                rel = path.relative_to(root)
            except ValueError:
                continue
            owners.add(rel.parts[0] if rel.parts else None)
        for owner in owners - {tenant}:
            raise StudioError(
                f"{field} points into the directory of another tenant "
                f"({owner or 'the tenants folder'}); a job of tenant {tenant!r} may only read its own data",
                where=str(cfg.path) if getattr(cfg, "path", None) else None,
                hint="copy the data into this tenant's raw/ folder or run the job as that tenant")
