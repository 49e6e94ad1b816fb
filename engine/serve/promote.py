"""Promotion: the `served_models` table — which run's adapter a tenant is served under which name, behind the gate.

`promote` registers a run's LoRA adapter for serving only when an Eval & Diff gate passed for it:
a `studio diff` (or `studio run`) result in the run's tenant, `evals/diff-*/stats.json`, whose
tuned eval is that run and whose gate (`better` or `not_worse`; `none` does not count) passed.
`force=True` skips the gate and is recorded (`forced = 1`). A running gateway re-reads this
table every `serve.reload_interval_s` seconds (and on `POST /admin/reload`).

`adapter_path` is stored relative to the tenant's directory (`runs/<run_id>/adapter`), never as a
resolved absolute path: an encrypted tenant's `tenants/<t>` is, during a job, a symlink to a
temporary plaintext view that is gone when the job ends. `adapter_dir` turns a stored path back
into a directory (absolute paths, as older rows and admin tooling wrote them, are kept as is).
Only safetensors adapters are promoted (`check_adapter`), and only names whose internal adapter id
(engine/serve/routes.py) is valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import GateFailed, NotFound, StudioError
from engine.models.loading import check_adapter
from engine.registry import Registry, connect, now_iso
from engine.serve.routes import internal_id
from engine.workspace import Workspace, check_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS served_models (
    tenant TEXT NOT NULL, name TEXT NOT NULL, run_id TEXT NOT NULL, adapter_path TEXT NOT NULL,
    base_model TEXT NOT NULL, promoted_at TEXT NOT NULL, demoted_at TEXT, forced INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
"""
GATES_THAT_COUNT = ("better", "not_worse")


@dataclass(frozen=True)
class GateEvidence:
    """The diff that lets a run be served."""

    diff_id: str
    require: str
    verdict: str
    base_eval_id: str | None
    tuned_eval_id: str | None
    passed: bool


class ServedModels:
    """The `served_models` table of a workspace's registry.sqlite."""

    def __init__(self, registry_path: str | Path):
        self.path = Path(registry_path)
        with connect(self.path) as db:
            db.executescript(SCHEMA)

    def upsert(self, row: dict[str, Any]) -> None:
        with connect(self.path) as db:
            db.execute("INSERT OR REPLACE INTO served_models VALUES (?,?,?,?,?,?,?,?)",
                       tuple(row[k] for k in ("tenant", "name", "run_id", "adapter_path", "base_model",
                                              "promoted_at", "demoted_at", "forced")))

    def get(self, tenant: str, name: str) -> dict[str, Any] | None:
        with connect(self.path) as db:
            row = db.execute("SELECT * FROM served_models WHERE tenant=? AND name=?",
                             (tenant, name)).fetchone()
        return dict(row) if row else None

    def list(self, tenant: str | None = None, active_only: bool = True) -> list[dict[str, Any]]:
        sql, args, where = "SELECT * FROM served_models", [], []
        if tenant is not None:
            where.append("tenant=?")
            args.append(tenant)
        if active_only:
            where.append("demoted_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        with connect(self.path) as db:
            return [dict(r) for r in db.execute(sql + " ORDER BY tenant, name", args)]

    def demote(self, tenant: str, name: str) -> dict[str, Any]:
        with connect(self.path) as db:
            row = db.execute("SELECT * FROM served_models WHERE tenant=? AND name=? AND demoted_at IS NULL",
                             (tenant, name)).fetchone()
            if row is None:
                raise NotFound(f"no served model {name!r} for tenant {tenant!r}",
                               hint="see `studio serve list`")
            demoted = now_iso()
            db.execute("UPDATE served_models SET demoted_at=? WHERE tenant=? AND name=?",
                       (demoted, tenant, name))
        return {**dict(row), "demoted_at": demoted}


def adapter_dir(ws: Workspace, tenant: str, stored: str) -> Path:
    """The adapter directory a `served_models.adapter_path` names (relative: inside the tenant's dir)."""
    path = Path(stored)
    if path.is_absolute():
        return path
    if ".." in path.parts:
        raise StudioError(f"served adapter path {stored!r} leaves the tenant directory",
                          hint="promote the run again with `studio serve promote`")
    return ws.tenant_dir(tenant, create=False) / path


def _tenant_relative(ws: Workspace, tenant: str, adapter: Path) -> str:
    """`adapter` relative to the tenant's directory (the stable form, whatever view is open now)."""
    tenant_dir = ws.tenant_dir(tenant, create=False)
    for root in (tenant_dir, tenant_dir.resolve()):  # the recorded path, or one inside a view
        try:
            return adapter.relative_to(root).as_posix()
        except ValueError:
            continue
    raise StudioError(f"the adapter of this run is outside tenant {tenant!r}'s directory",
                      hint="runs are served from tenants/<tenant>/runs/<run_id>/adapter")


def find_gate(ws: Workspace, registry: Registry, tenant: str, run_id: str) -> list[GateEvidence]:
    """Every diff in the tenant's evals whose tuned side is `run_id` (passing ones first)."""
    evals_dir = ws.tenant_dir(tenant, create=False) / "evals"
    found: list[GateEvidence] = []
    if not evals_dir.is_dir():
        return found
    for stats_path in sorted(evals_dir.glob("diff-*/stats.json")):
        try:
            stats = json.loads(stats_path.read_text(encoding="utf-8"))
            gate = stats["gate"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        tuned_id = stats.get("tuned_eval_id")
        tuned = registry.get_eval(tuned_id) if isinstance(tuned_id, str) else None
        tuned_ref = tuned["model_ref"] if tuned and tuned["tenant"] == tenant else None
        if tuned_ref is None:  # an eval id no longer in the registry: trust the label only then
            tuned_ref = (stats.get("labels") or {}).get("tuned")
        if tuned_ref != run_id:
            continue
        require = str(gate.get("require"))
        found.append(GateEvidence(
            diff_id=stats_path.parent.name, require=require, verdict=str(stats.get("verdict")),
            base_eval_id=stats.get("base_eval_id"), tuned_eval_id=tuned_id,
            passed=bool(gate.get("passed")) and require in GATES_THAT_COUNT))
    return sorted(found, key=lambda g: not g.passed)


def promote(ws: Workspace, registry: Registry, run_id: str, name: str, *,
            force: bool = False) -> dict[str, Any]:
    """Serve run `run_id`'s adapter to its tenant as `name`; refused unless its gate passed (or force).

    Returns the served_models row plus `gate` (the passing diff id, or None when forced).
    """
    check_name(name, "served model")
    run = registry.get_run(run_id)
    if run is None:
        raise StudioError(f"unknown run {run_id!r}", hint="see `studio runs list`")
    if run["status"] != "succeeded":
        raise StudioError(f"run {run_id} has status {run['status']!r}, not 'succeeded'",
                          hint="only finished runs can be served")
    adapter = Path(run["path"]) / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise StudioError(f"run {run_id} has no LoRA adapter to serve (full fine-tunes are served "
                          "as their own base model)", hint=f"export it: studio export {run_id} --merge, "
                          "then import the merged model with `studio models import`")
    tenant = run["tenant"]
    internal_id(tenant, name)  # refuses a tenant or model name that no internal id can represent
    check_adapter(adapter)  # safetensors only: a pickle adapter can run code when loaded
    stored = _tenant_relative(ws, tenant, adapter)
    evidence = find_gate(ws, registry, tenant, run_id)
    passing = [g for g in evidence if g.passed]
    if not passing and not force:
        seen = "; ".join(f"{g.diff_id}: gate '{g.require}' verdict {g.verdict}" for g in evidence)
        raise GateFailed(
            f"run {run_id} has no passing Eval & Diff gate" + (f" ({seen})" if seen else
                                                               " (no diff with this run as the tuned side)"),
            hint="evaluate the base model and the run on the same items, then `studio diff BASE_EVAL "
                 "RUN_EVAL` (gate better or not_worse); or promote with --force (recorded)")
    row = {"tenant": tenant, "name": name, "run_id": run_id, "adapter_path": stored,
           "base_model": run["base_model"], "promoted_at": now_iso(), "demoted_at": None,
           "forced": 0 if passing else 1}
    ServedModels(registry.path).upsert(row)
    return {**row, "gate": passing[0].diff_id if passing else None}


def demote(ws: Workspace, tenant: str, name: str) -> dict[str, Any]:
    check_name(tenant, "tenant")
    return ServedModels(ws.registry_path).demote(tenant, name)
