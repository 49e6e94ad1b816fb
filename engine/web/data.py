"""What the dashboard shows, read from the registry and run/dataset/eval directories, scoped to tenants.

A `View` is built per request from the session: a tenant key's view holds only that tenant, an
admin key's view every tenant. Every lookup by id checks the object's tenant against the view
and answers None for anything outside it (the routes turn None into 404).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from engine.registry import Registry, connect
from engine.registry import table_rows as registry_table_rows
from engine.repro.reproduce import list_reproductions
from engine.train.plot import loss_svg
from engine.web.audit import read_and_verify
from engine.workspace import Workspace

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
LINEAGE_SAMPLE_IDS = 20


def safe_id(value: str) -> bool:
    """Ids that come from URLs and become path parts: no separators, no '..'."""
    return bool(_SAFE_ID.match(value or "")) and ".." not in value


def table_rows(db_path: Path, table: str, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a query on a table that other modules own and may not have created yet ([] then)."""
    return registry_table_rows(db_path, table, sql, args) or []


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class View:
    """Read-only access to one workspace for one tenant (or, tenant=None, an admin: all tenants)."""

    def __init__(self, ws: Workspace, tenant: str | None):
        self.ws = ws
        self.tenant = tenant
        self.registry = Registry(ws.registry_path)

    # scope -----------------------------------------------------------------------------------
    def tenants(self) -> list[str]:
        if self.tenant is not None:
            return [self.tenant]
        found: set[str] = set()
        with connect(self.ws.registry_path) as db:
            for table in ("datasets", "runs", "evals"):
                found.update(r[0] for r in db.execute(f"SELECT DISTINCT tenant FROM {table}"))
        tdir = self.ws.root / "tenants"
        if tdir.is_dir():
            found.update(p.name for p in tdir.iterdir() if p.is_dir())
        return sorted(found)

    def allows(self, tenant: str | None) -> bool:
        return tenant is not None and (self.tenant is None or tenant == self.tenant)

    # datasets --------------------------------------------------------------------------------
    def datasets(self) -> list[dict[str, Any]]:
        return [r for t in self.tenants() for r in self.registry.list_datasets(t)]

    def dataset(self, tenant: str, name: str, version: int, sample: str | None = None
                ) -> dict[str, Any] | None:
        if not self.allows(tenant):
            return None
        row = self.registry.get_dataset(tenant, name, version)
        if row is None:
            return None
        root = Path(row["path"])
        card = _read_json(root / "card.json") or {}
        ids: list[str] = []
        chosen: dict[str, Any] | None = None
        lineage = root / "lineage.jsonl"
        if lineage.is_file():
            with lineage.open(encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    entry = json.loads(line)
                    if len(ids) < LINEAGE_SAMPLE_IDS:
                        ids.append(str(entry.get("id")))
                    if chosen is None and (sample is None or str(entry.get("id")) == sample):
                        chosen = entry
                    if chosen is not None and len(ids) >= LINEAGE_SAMPLE_IDS:
                        break
        return {"row": row, "card": card, "sample_ids": ids, "lineage": chosen,
                "sample_missing": sample is not None and chosen is None}

    # runs ------------------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        repro = self._reproductions()
        out = []
        for t in self.tenants():
            for r in self.registry.list_runs(t):
                out.append({**r, "reproductions": repro["by_original"].get(r["run_id"], []),
                            "reproduces": repro["by_run"].get(r["run_id"])})
        return out

    def _reproductions(self) -> dict[str, Any]:
        by_original: dict[str, list[dict[str, Any]]] = defaultdict(list)
        by_run: dict[str, dict[str, Any]] = {}
        for t in self.tenants():
            for r in list_reproductions(self.ws.registry_path, t):
                by_original[r["original_run"]].append(r)
                by_run[r["run_id"]] = r
        return {"by_original": by_original, "by_run": by_run}

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self.registry.get_run(run_id) if safe_id(run_id) else None
        if row is None or not self.allows(row["tenant"]):
            return None
        path = Path(row["path"])
        manifest = _read_json(path / "manifest.json")
        metrics_rows = []
        if (path / "metrics.jsonl").is_file():
            metrics_rows = [json.loads(line) for line in
                            (path / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        config = (path / "config.yaml").read_text(encoding="utf-8") if (path / "config.yaml").is_file() else ""
        repro = self._reproductions()
        certs = []
        linked = repro["by_original"].get(run_id, []) + (
            [repro["by_run"][run_id]] if run_id in repro["by_run"] else [])
        for r in linked:
            cert = _read_json(Path(r["certificate"])) if self.allows(r["tenant"]) else None
            if cert is not None:
                certs.append(cert)
        svg = loss_svg(metrics_rows, title=f"{run_id}: loss and learning rate") if any(
            "loss" in m for m in metrics_rows) else ""
        svg = svg.replace(' xmlns="http://www.w3.org/2000/svg"', "")  # inline in HTML: no namespace URL
        board = path / "tensorboard"  # train.logging: tensorboard (engine/train/common.py)
        events = sorted(board.rglob("events.out.tfevents.*")) if board.is_dir() else []
        return {"row": row, "manifest": manifest, "config": config, "certificates": certs,
                "loss_svg": svg, "steps": [m for m in metrics_rows if "loss" in m],
                "tensorboard": {"dir": str(board), "event_files": len(events)} if events else None}

    # evals -----------------------------------------------------------------------------------
    def evals(self) -> list[dict[str, Any]]:
        return [r for t in self.tenants() for r in self.registry.list_evals(t)]

    def diffs(self) -> list[dict[str, Any]]:
        out = []
        for t in self.tenants():
            root = self.ws.root / "tenants" / t / "evals"
            if not root.is_dir():
                continue
            for d in sorted(root.glob("diff-*")):
                stats = _read_json(d / "stats.json")
                if stats is not None:
                    out.append({"id": d.name, "tenant": t, "dir": d, "stats": stats,
                                "has_report": (d / "report.html").is_file()})
        return out

    def diff(self, diff_id: str) -> dict[str, Any] | None:
        if not safe_id(diff_id) or not diff_id.startswith("diff-"):
            return None
        for t in self.tenants():
            d = self.ws.root / "tenants" / t / "evals" / diff_id
            stats = _read_json(d / "stats.json") if d.is_dir() else None
            if stats is not None:
                return {"id": diff_id, "tenant": t, "dir": d, "stats": stats,
                        "has_report": (d / "report.html").is_file()}
        return None

    def has_table(self, table: str) -> bool:
        with connect(self.ws.registry_path) as db:
            return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                              (table,)).fetchone() is not None

    # models ----------------------------------------------------------------------------------
    def served(self) -> list[dict[str, Any]]:
        rows = table_rows(self.ws.registry_path, "served_models",
                          "SELECT * FROM served_models ORDER BY promoted_at")
        return [r for r in rows if self.allows(r.get("tenant"))]

    def usage_by_month(self) -> list[dict[str, Any]]:
        rows = table_rows(self.ws.registry_path, "usage",
                          "SELECT tenant, model, substr(day, 1, 7) AS month, SUM(requests) AS requests, "
                          "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
                          "SUM(errors) AS errors FROM usage GROUP BY tenant, model, month "
                          "ORDER BY month, tenant, model")
        return [r for r in rows if self.allows(r.get("tenant"))]

    def model_lineage(self) -> list[dict[str, Any]]:
        """Per base model used in view: its runs as a tree (parent_run), each with its promotions."""
        runs = self.runs()
        served = self.served()
        promoted: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in served:
            promoted[s["run_id"]].append(s)
        children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        ids = {r["run_id"] for r in runs}
        for r in runs:
            parent = r.get("parent_run") if r.get("parent_run") in ids else None
            children[parent].append({**r, "promoted": promoted.get(r["run_id"], [])})

        def tree(run: dict[str, Any]) -> dict[str, Any]:
            return {**run, "children": [tree(c) for c in children.get(run["run_id"], [])]}

        bases: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in children[None]:
            bases[r["base_model"]].append(tree(r))
        models = {m["name"]: m for m in self.registry.list_models()}
        if self.tenant is None:
            for name in models:
                bases.setdefault(name, [])
        return [{"name": name, "model": models.get(name), "runs": rs} for name, rs in sorted(bases.items())]

    # audit -----------------------------------------------------------------------------------
    def audit(self) -> Any:
        """The chain check covers the whole log; the rows and their count are this view's only."""
        status = read_and_verify(self.ws)
        status.rows = [r for r in status.rows if self.tenant is None or r.get("tenant") == self.tenant]
        status.entries = len(status.rows)
        status.scoped = self.tenant is not None
        return status
