"""`studio stats` and the Prometheus export on the dashboard's workspace (real tiny refine + train + eval + diff).

TTFM is measured from the real refine's ingest start to the real run's promotion (a served_models
row in the agreed schema: promotion belongs to serving), and, without promotions, to the real diff
whose not_worse gate passed. Extra runs and usage rows are added to a copy of the workspace.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from engine import metrics
from engine.errors import StudioError
from engine.registry import Registry
from engine.workspace import Workspace
from tests.helpers import ROOT
from tests.helpers import studio as _studio


@pytest.fixture
def ws(filled: dict[str, Any], tmp_path: Path) -> Workspace:
    copy = tmp_path / "ws"
    shutil.copytree(filled["ws"], copy)
    return Workspace(copy)


def _sql(ws: Workspace, *statements: str) -> None:
    with closing(sqlite3.connect(ws.registry_path)) as db, db:
        for s in statements:
            db.execute(s)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_ttfm_from_first_ingest_to_promotion_then_to_passed_gate(ws: Workspace, filled: dict[str, Any]) -> None:
    registry = Registry(ws.registry_path)
    (ds,) = registry.list_datasets("default")
    data = metrics.compute(ws, "default")
    rows = {r["project"]: r for r in data["ttfm"]}
    assert set(rows) == {metrics.ALL, "brightwave-tickets"}
    row = rows["brightwave-tickets"]
    assert row["definition"] == metrics.DEF_PROMOTED and row["run_id"] == filled["run_id"]
    expected = (_ts(filled["promoted_at"]) - _ts(ds["ingest_started_at"])).total_seconds()
    assert row["seconds"] == pytest.approx(expected) and row["seconds"] > 0
    assert rows[metrics.ALL]["seconds"] == row["seconds"]

    _sql(ws, "DROP TABLE served_models")  # nothing promoted: the first passed gate counts
    row = {r["project"]: r for r in metrics.compute(ws, "default")["ttfm"]}["brightwave-tickets"]
    assert row["definition"] == metrics.DEF_GATE and row["run_id"] == filled["run_id"]
    diff_stats = ws.root / "tenants/default/evals" / filled["diff_id"] / "stats.json"
    assert json.loads(diff_stats.read_text())["gate"] == {**json.loads(diff_stats.read_text())["gate"],
                                                          "require": "not_worse", "passed": True}
    when = datetime.fromtimestamp(diff_stats.stat().st_mtime, tz=timezone.utc)
    assert row["seconds"] == pytest.approx((when - _ts(ds["ingest_started_at"])).total_seconds())
    run = registry.get_run(filled["run_id"])
    assert _ts(run["finished_at"]) < when  # proven after training finished

    # a gate of 'none' proves nothing
    stats_json = json.loads(diff_stats.read_text())
    stats_json["gate"]["require"] = "none"
    diff_stats.write_text(json.dumps(stats_json))
    row = {r["project"]: r for r in metrics.compute(ws, "default")["ttfm"]}["brightwave-tickets"]
    assert (row["definition"], row["seconds"]) == (None, None)
    b = {r["project"]: r for r in metrics.compute(ws, "b")["ttfm"]}
    assert b[metrics.ALL]["seconds"] is None and b[metrics.ALL]["first_ingest"] is not None


def _next_month(created_at: str) -> str:
    """The YYYY-MM after the month of an ISO timestamp (December rolls over into January)."""
    year, month = int(created_at[:4]), int(created_at[5:7])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def test_next_month_rolls_over_the_year() -> None:
    assert [_next_month(f"2026-{m:02d}-28T23:59:59+00:00") for m in (1, 11, 12)] == \
        ["2026-02", "2026-12", "2027-01"]


def test_retrain_rate_counts_runs_per_lineage_per_month(ws: Workspace, filled: dict[str, Any]) -> None:
    # the fixture's run was created when the fixture ran: the extra runs go into the month after it,
    # whatever today's date is (the reproduction, created right after the run, is excluded anyway)
    month = Registry(ws.registry_path).get_run(filled["run_id"])["created_at"][:7]
    later = _next_month(month)
    run_dir = str(ws.root / "tenants/default/runs/x")
    _sql(ws,
         "INSERT INTO runs VALUES ('run-child', 'default', 'dpo', 'smollm2-135m-instruct', "
         f"'prefs@v1', 'succeeded', '{run_dir}', '{later}-03T10:00:00+00:00', NULL, NULL, '{filled['run_id']}')",
         "INSERT INTO runs VALUES ('run-later', 'default', 'sft', 'smollm2-135m-instruct', "
         f"'brightwave-tickets@v2', 'succeeded', '{run_dir}', '{later}-20T10:00:00+00:00', NULL, NULL, NULL)",
         "INSERT INTO runs VALUES ('run-failed', 'default', 'sft', 'smollm2-135m-instruct', "
         f"'brightwave-tickets@v2', 'failed', '{run_dir}', '{later}-21T10:00:00+00:00', NULL, NULL, NULL)")
    data = metrics.compute(ws, "default")
    per = {(r["project"], r["month"]): r["runs"] for r in data["retrain"]["per_lineage_month"]}
    # the reproduction and the failed run are no retrains; the DPO child joins its parent's lineage
    assert per == {("brightwave-tickets", month): 1, ("brightwave-tickets", later): 2}
    assert data["retrain"]["runs_per_lineage_per_month"] == pytest.approx(1.5)
    only_later = metrics.compute(ws, "default", later)["retrain"]
    assert only_later["per_lineage_month"][0]["runs"] == 2 and only_later["runs_per_lineage_per_month"] == 2.0


def test_inferences_per_model_per_month(ws: Workspace) -> None:
    _sql(ws, "INSERT INTO usage VALUES ('default', 'brightwave-triage', '2026-12-01', 5, 10, 10, 0)")
    data = metrics.compute(ws, "default")
    assert [(r["model"], r["month"], r["requests"]) for r in data["inferences"]] == [
        ("brightwave-triage", "2026-11", 200), ("brightwave-triage", "2026-12", 5)]
    assert [r["requests"] for r in metrics.compute(ws, None, "2026-11")["inferences"]] == [7, 200]
    _sql(ws, "DROP TABLE usage")  # serving not installed yet: promoted models at zero
    data = metrics.compute(ws, "default", "2026-11")
    assert data["inferences"] == [{"tenant": "default", "model": "brightwave-triage", "month": "2026-11",
                                   "requests": 0}]
    assert data["sources"] == {"served_models": True, "usage": False}
    with pytest.raises(StudioError, match="--month"):
        metrics.compute(ws, None, "2026-13")


def test_prometheus_text_has_the_same_numbers(ws: Workspace, filled: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics.prometheus_text(ws)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {"studio_ttfm_seconds", "studio_retrain_runs", "studio_inferences"}
    data = metrics.compute(ws)
    ttfm = {(s.labels["tenant"], s.labels["project"]): s.value for s in families["studio_ttfm_seconds"].samples}
    assert ttfm[("default", "brightwave-tickets")] == pytest.approx(
        {(r["tenant"], r["project"]): r["seconds"] for r in data["ttfm"]}[("default", "brightwave-tickets")])
    assert ("b", metrics.ALL) not in ttfm  # no model yet: no sample rather than a fake number
    inf = {(s.labels["tenant"], s.labels["model"]): s.value for s in families["studio_inferences"].samples}
    assert inf == {("default", "brightwave-triage"): 200.0, ("b", "b-model"): 7.0}


def test_cli_prints_the_same_json(ws: Workspace) -> None:
    res = _studio("--workspace", str(ws.root), "stats", "--tenant", "default", "--json", cwd=ws.root,
                  env={"PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(json.dumps(metrics.compute(ws, "default")))
    res = _studio("--workspace", str(ws.root), "stats", cwd=ws.root, env={"PYTHONPATH": str(ROOT)})
    assert res.returncode == 0 and "Time to first model" in res.stdout and "brightwave-triage" in res.stdout
    res = _studio("--workspace", str(ws.root), "stats", "--month", "11-2026", cwd=ws.root,
                  env={"PYTHONPATH": str(ROOT)})
    assert res.returncode == 2 and "--month" in res.stderr
