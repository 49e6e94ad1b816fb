"""Retention policy enforcement: delete what the policy says is no longer kept, each deletion
through `purge` (signed certificate + audit entry). Runs after refine/train and on
`studio purge --expired`.
"""

from __future__ import annotations

import glob
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.privacy.policy import load_policy
from engine.privacy.purge import Target, _query, purge
from engine.registry import Registry
from engine.workspace import Workspace

if TYPE_CHECKING:
    from engine.config import StudioConfig

GOLDEN_FILES = ("train.jsonl", "val.jsonl", "rejects.jsonl", "lineage.jsonl")
WEIGHT_DIRS = ("adapter", "checkpoints", "export", "model")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def after_refine(ws: Workspace, cfg: StudioConfig, result: Any) -> list[Path]:
    """raw_after_refine: delete → remove the refine inputs stored under tenants/<t>/raw/."""
    tenant = cfg.tenant
    if load_policy(ws).retention_for(tenant).raw_after_refine != "delete":
        return []
    raw_root = ws.tenant_dir(tenant, create=False) / "raw"
    found: list[Path] = []
    for spec in cfg.refine.inputs:
        pattern = str(cfg.resolve_path(spec.path))
        for name in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
            p = Path(name)
            if p.exists() and _inside(p, raw_root) and p.resolve() != raw_root.resolve():
                # the workspace path, also when tenants/<t> is an encrypted tenant's view symlink
                found.append(raw_root / p.resolve().relative_to(raw_root.resolve()))
    if not found:
        return []
    target = Target({"policy": "raw_after_refine", "dataset": result.name,
                     "version": result.version}, found, [])
    return [purge(ws, tenant, target, reason="retention:raw_after_refine")[1]]


def after_train(ws: Workspace, tenant: str, run_id: str, registry: Registry) -> list[Path]:
    """golden_after_train: delete → the trained version's train/val/rejects/lineage (eval split
    and card stay, so the run can still be evaluated and its lineage read); then expiry."""
    certs: list[Path] = []
    if load_policy(ws).retention_for(tenant).golden_after_train == "delete":
        run = registry.get_run(run_id)
        # one version ("name@vN"), or a weighted mixture's sources joined by "+" (names cannot
        # hold "+"); a plain file's name matches no version of this tenant's and is skipped
        for ref in (str(run["dataset"]) if run else "").split("+"):
            name, _, ver = ref.partition("@v")
            row = registry.get_dataset(tenant, name, int(ver)) if ver.isdigit() else None
            if row is None:
                continue
            files = [Path(row["path"]) / f for f in GOLDEN_FILES if (Path(row["path"]) / f).exists()]
            files += sorted(Path(row["path"]).glob("pii_vault.enc*"))
            if files:
                target = Target({"policy": "golden_after_train", "dataset": name,
                                 "version": int(ver), "run_id": run_id}, files, [])
                certs.append(purge(ws, tenant, target, reason="retention:golden_after_train")[1])
    return certs + expire(ws, tenant, keep_run=run_id)


def _older(created: str, days: int | None, now: datetime) -> bool:
    if days is None:
        return False
    try:
        ts = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return False
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return now - ts >= timedelta(days=days)


def expire(ws: Workspace, tenant: str, now: datetime | None = None,
           keep_run: str | None = None) -> list[Path]:
    """Delete runs, run weights, evals and dataset versions older than the policy's day limits."""
    pol = load_policy(ws).retention_for(tenant)
    now = now or datetime.now(timezone.utc)
    tdir = ws.tenant_dir(tenant, create=False)
    certs: list[Path] = []
    for run in _query(ws, "SELECT run_id, created_at FROM runs WHERE tenant=? ORDER BY created_at", tenant):
        rid = run["run_id"]
        if rid == keep_run:
            continue
        if _older(run["created_at"], pol.runs_days, now):
            t = Target({"policy": "runs_days", "run_id": rid}, [tdir / "runs" / rid],
                       [("runs", "run_id=? AND tenant=?", (rid, tenant))])
            certs.append(purge(ws, tenant, t, reason="retention:runs_days")[1])
        elif _older(run["created_at"], pol.adapters_days, now):
            weights = [tdir / "runs" / rid / d for d in WEIGHT_DIRS if (tdir / "runs" / rid / d).exists()]
            if weights:
                t = Target({"policy": "adapters_days", "run_id": rid}, weights, [])
                certs.append(purge(ws, tenant, t, reason="retention:adapters_days")[1])
    for ev in _query(ws, "SELECT eval_id, created_at FROM evals WHERE tenant=?", tenant):
        if _older(ev["created_at"], pol.evals_days, now):
            eid = ev["eval_id"]
            t = Target({"policy": "evals_days", "eval_id": eid}, [tdir / "evals" / eid],
                       [("evals", "eval_id=? AND tenant=?", (eid, tenant))])
            certs.append(purge(ws, tenant, t, reason="retention:evals_days")[1])
    for ds in _query(ws, "SELECT name, version, created_at FROM datasets WHERE tenant=?", tenant):
        if _older(ds["created_at"], pol.datasets_days, now):
            name, v = ds["name"], ds["version"]
            t = Target({"policy": "datasets_days", "dataset": name, "version": v},
                       [tdir / "datasets" / name / f"v{v}"],
                       [("datasets", "tenant=? AND name=? AND version=?", (tenant, name, v))])
            certs.append(purge(ws, tenant, t, reason="retention:datasets_days")[1])
    return certs
