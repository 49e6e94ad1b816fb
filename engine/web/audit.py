"""The dashboard's view of the audit log: entries plus the chain check of engine/privacy/audit.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.privacy import audit
from engine.workspace import Workspace


@dataclass
class ChainStatus:
    present: bool
    entries: int = 0  # the entries shown (a tenant's view: that tenant's only)
    scoped: bool = False  # rows and count are one tenant's; the chain check covered the whole log
    ok: bool = True
    broken_at: int | None = None  # 1-based line number of the first bad entry (None: the tail)
    reason: str | None = None
    recoverable: bool = False  # an interrupted append: nothing lost, the next record repairs it
    rows: list[dict[str, Any]] = field(default_factory=list)


def read_and_verify(ws: Workspace) -> ChainStatus:
    """Every readable entry of the workspace's audit log and whether its hash chain holds."""
    if not audit.log_path(ws).is_file():
        return ChainStatus(present=False)
    result = audit.verify(ws)
    rows = audit.entries(ws)
    return ChainStatus(True, entries=len(rows), ok=result.ok, broken_at=result.line,
                       reason=result.reason, recoverable=result.recoverable, rows=rows)
