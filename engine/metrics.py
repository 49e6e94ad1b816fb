"""The product's metrics — time to first model, retrain rate, inferences per custom model (`studio stats`).

Read-only over the registry and the eval directories of a workspace:

* TTFM (time to first model), per tenant and per project (dataset name): from the first raw
  ingest (`datasets.ingest_started_at`) to the first model that is promoted (`served_models`,
  owned by serving). Where nothing was promoted yet (or the table does not exist), the first
  model *proven* instead: the first finished run whose diff against its base passed a real gate
  (`better` or `not_worse`; `none` proves nothing), timed when its stats.json was written. Each
  value says which definition it used.
* Retrain rate: training runs per model lineage per month. A lineage is (tenant, base model,
  project) of the root of a run's `parent_run` chain; reproductions (`studio reproduce`) and
  failed runs are not retrains.
* Inferences per custom model per month: `usage.requests` summed by (tenant, model, month)
  (owned by serving; zeros for the promoted models when the table does not exist yet).

`prometheus_text(ws)` renders the same numbers in the Prometheus text format for the gateway's
/metrics (its own CollectorRegistry, `StudioCollector`). The CLI is engine/cli/stats.py.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from engine.errors import StudioError
from engine.registry import table_rows
from engine.workspace import Workspace

DEF_PROMOTED = "first promotion (served_models.promoted_at)"
DEF_GATE = "first passed diff gate (better/not_worse), no promotion yet"
PROVING_GATES = ("better", "not_worse")
ALL = "(all)"  # the project label of a tenant-wide TTFM
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _project(dataset_ref: str | None) -> str:
    return (dataset_ref or "").split("@", 1)[0] or "(file)"


def _reproduction_ids(db: Path) -> set[str]:
    return {r["run_id"] for r in (table_rows(db, "reproductions", "SELECT run_id FROM reproductions") or [])}


def _passed_gates(ws: Workspace, tenant: str, evals: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Diffs of a tenant that passed a proving gate: (run id, when)."""
    out = []
    root = ws.root / "tenants" / tenant / "evals"
    for stats_path in sorted(root.glob("diff-*/stats.json")) if root.is_dir() else []:
        try:
            stats = json.loads(stats_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        gate = stats.get("gate") or {}
        if not gate.get("passed") or gate.get("require") not in PROVING_GATES:
            continue
        tuned = evals.get(stats.get("tuned_eval_id") or "")
        run_id = tuned["model_ref"] if tuned else (stats.get("labels") or {}).get("tuned")
        when = datetime.fromtimestamp(stats_path.stat().st_mtime, tz=timezone.utc)
        out.append({"run_id": run_id, "at": when, "diff": stats_path.parent.name})
    return out


def compute(ws: Workspace, tenant: str | None = None, month: str | None = None) -> dict[str, Any]:
    """Every metric, for one tenant or all; `month` (YYYY-MM) limits the per-month tables."""
    if month is not None and not _MONTH.match(month):
        raise StudioError(f"--month must look like 2026-11, got {month!r}")
    db = ws.registry_path
    datasets = table_rows(db, "datasets", "SELECT tenant, name, version, ingest_started_at, created_at "
                     "FROM datasets") or []
    runs = table_rows(db, "runs", "SELECT run_id, tenant, base_model, dataset, status, created_at, "
                 "finished_at, parent_run FROM runs") or []
    evals = {r["eval_id"]: r for r in table_rows(db, "evals", "SELECT eval_id, tenant, model_ref FROM evals") or []}
    served = table_rows(db, "served_models", "SELECT * FROM served_models")
    usage = table_rows(db, "usage", "SELECT tenant, model, day, requests FROM usage")
    tenants = sorted({r["tenant"] for r in datasets + runs} | {r["tenant"] for r in served or []}
                     | {r["tenant"] for r in usage or []})
    if tenant is not None:
        tenants = [t for t in tenants if t == tenant] or [tenant]
    runs_by_id = {r["run_id"]: r for r in runs}
    reproductions = _reproduction_ids(db)

    ttfm: list[dict[str, Any]] = []
    for t in tenants:
        proofs = _passed_gates(ws, t, evals)
        t_sets = [d for d in datasets if d["tenant"] == t]
        groups: dict[str, list[dict[str, Any]]] = {ALL: t_sets}
        for d in t_sets:
            groups.setdefault(d["name"], []).append(d)
        for project, rows in groups.items():
            starts = [s for s in (_ts(d["ingest_started_at"]) for d in rows) if s]
            start = min(starts) if starts else None

            def in_project(run_id: str | None) -> bool:
                run = runs_by_id.get(run_id or "")
                return (run is not None and run["tenant"] == t
                        and (project == ALL or _project(run["dataset"]) == project))

            promoted = [(_ts(s["promoted_at"]), s["run_id"]) for s in served or []
                        if s["tenant"] == t and in_project(s["run_id"]) and _ts(s["promoted_at"])]
            proved = [(p["at"], p["run_id"]) for p in proofs if in_project(p["run_id"])
                      and runs_by_id[p["run_id"]]["status"] == "succeeded"]
            definition, end = (DEF_PROMOTED, min(promoted)) if promoted else (
                (DEF_GATE, min(proved)) if proved else (None, None))
            seconds = (end[0] - start).total_seconds() if start and end else None
            ttfm.append({"tenant": t, "project": project, "seconds": seconds,
                         "first_ingest": start.isoformat() if start else None,
                         "first_model_at": end[0].isoformat() if end else None,
                         "run_id": end[1] if end else None, "definition": definition})

    def root(run: dict[str, Any]) -> dict[str, Any]:
        seen = set()
        while run.get("parent_run") in runs_by_id and run["run_id"] not in seen:
            seen.add(run["run_id"])
            run = runs_by_id[run["parent_run"]]
        return run

    per_lineage: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in runs:
        if r["tenant"] not in tenants or r["status"] != "succeeded" or r["run_id"] in reproductions:
            continue
        top = root(r)
        m = (r["created_at"] or "")[:7]
        per_lineage[(r["tenant"], top["base_model"], _project(top["dataset"]))][m] += 1
    retrain = [{"tenant": t, "base_model": b, "project": p, "month": m, "runs": n}
               for (t, b, p), months in sorted(per_lineage.items()) for m, n in sorted(months.items())
               if month is None or m == month]
    months_seen = sorted({row["month"] for row in retrain})
    rate = (sum(row["runs"] for row in retrain) / len({(r["tenant"], r["base_model"], r["project"])
                                                      for r in retrain}) / len(months_seen)) if retrain else 0.0

    inferences: dict[tuple[str, str, str], int] = defaultdict(int)
    for u in usage or []:
        if u["tenant"] in tenants and (month is None or u["day"][:7] == month):
            inferences[(u["tenant"], u["model"], u["day"][:7])] += int(u["requests"] or 0)
    if usage is None:  # no serving yet: every promoted model at zero
        for s in served or []:
            if s["tenant"] in tenants:
                inferences[(s["tenant"], s["name"], month or datetime.now(timezone.utc).strftime("%Y-%m"))] += 0
    return {
        "tenant": tenant, "month": month,
        "ttfm": ttfm,
        "retrain": {"per_lineage_month": retrain, "runs_per_lineage_per_month": round(rate, 4),
                    "definition": "succeeded runs (reproductions excluded) per (tenant, base model, "
                                  "project) of the root of their parent_run chain, per month"},
        "inferences": [{"tenant": t, "model": mdl, "month": m, "requests": n}
                       for (t, mdl, m), n in sorted(inferences.items())],
        "sources": {"served_models": served is not None, "usage": usage is not None},
    }


# ------------------------------------------------------------------------------------ Prometheus
class StudioCollector:
    """A prometheus_client collector over one workspace (register it in any CollectorRegistry)."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        data = compute(self.ws)
        ttfm = GaugeMetricFamily("studio_ttfm_seconds", "Time from first raw ingest to first model "
                                 "(promoted, else first passed gate)", labels=["tenant", "project", "definition"])
        for row in data["ttfm"]:
            if row["seconds"] is not None:
                ttfm.add_metric([row["tenant"], row["project"],
                                 "promoted" if row["definition"] == DEF_PROMOTED else "gate"], row["seconds"])
        yield ttfm
        retrain = GaugeMetricFamily("studio_retrain_runs", "Succeeded training runs per model lineage and month",
                                    labels=["tenant", "base_model", "project", "month"])
        for row in data["retrain"]["per_lineage_month"]:
            retrain.add_metric([row["tenant"], row["base_model"], row["project"], row["month"]], row["runs"])
        yield retrain
        inf = GaugeMetricFamily("studio_inferences", "Inference requests per custom model and month",
                                labels=["tenant", "model", "month"])
        for row in data["inferences"]:
            inf.add_metric([row["tenant"], row["model"], row["month"]], row["requests"])
        yield inf


def prometheus_text(ws: Workspace) -> str:
    """The metrics in the Prometheus text exposition format (for the gateway's /metrics)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StudioCollector(ws))  # type: ignore[arg-type]
    return generate_latest(registry).decode("utf-8")
