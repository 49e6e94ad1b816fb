"""Retention policy: privacy.yaml parsing, per-tenant overrides, expiry with certificates; the
audit CLI's exit codes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.privacy import audit
from engine.privacy.policy import load_policy
from engine.privacy.purge import verify_certificate
from engine.privacy.retention import after_train, expire
from engine.registry import Registry
from engine.workspace import Workspace
from tests.helpers import ROOT, studio

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _run(ws: Workspace, reg: Registry, tenant: str, rid: str, days_old: int) -> Path:
    d = ws.run_dir(tenant, rid)
    for sub in ("adapter", "checkpoints/step-1"):
        (d / sub).mkdir(parents=True)
        (d / sub / "w.safetensors").write_bytes(b"w")
    (d / "manifest.json").write_text("{}")
    reg.put_run(rid, tenant, "sft", "tiny", "tickets@v1", d)
    created = (NOW - timedelta(days=days_old)).isoformat()
    with reg._db() as db:
        db.execute("UPDATE runs SET created_at=? WHERE run_id=?", (created, rid))
    return d


def test_policy_file_validation_and_overrides(workspace: Workspace) -> None:
    assert load_policy(workspace).retention_for("acme").runs_days is None  # no file: keep all
    (workspace.root / "privacy.yaml").write_text(
        "retention: {runs_days: 30, adapters_days: 7}\n"
        "tenants: {acme: {retention: {runs_days: 1}, encryption: true}}\n")
    pol = load_policy(workspace)
    assert pol.retention_for("acme").runs_days == 1 and pol.retention_for("acme").adapters_days == 7
    assert pol.retention_for("globex").runs_days == 30
    assert pol.encrypted("acme") and not pol.encrypted("globex")
    (workspace.root / "privacy.yaml").write_text("retention: {run_days: 3}\n")
    with pytest.raises(ConfigError, match="retention.run_days: unknown key"):
        load_policy(workspace)
    (workspace.root / "privacy.yaml").write_text("retention: {raw_after_refine: shred}\n")
    with pytest.raises(ConfigError, match="raw_after_refine"):
        load_policy(workspace)


def test_expiry_deletes_old_runs_and_old_weights_with_certificates(workspace: Workspace,
                                                                    registry: Registry) -> None:
    old = _run(workspace, registry, "acme", "run-old", 40)
    mid = _run(workspace, registry, "acme", "run-mid", 10)
    new = _run(workspace, registry, "acme", "run-new", 1)
    other = _run(workspace, registry, "globex", "run-globex-old", 40)
    (workspace.root / "privacy.yaml").write_text("retention: {runs_days: 30, adapters_days: 7}\n"
                                                 "tenants: {globex: {retention: {runs_days: null}}}\n")
    certs = expire(workspace, "acme", now=NOW)
    assert len(certs) == 2
    assert not old.exists() and registry.get_run("run-old") is None
    assert mid.is_dir() and (mid / "manifest.json").exists()  # the record stays ...
    assert not (mid / "adapter").exists() and not (mid / "checkpoints").exists()  # ... weights go
    assert (new / "adapter").exists() and other.exists()
    reasons = sorted(verify_certificate(c)["reason"] for c in certs)
    assert reasons == ["retention:adapters_days", "retention:runs_days"]
    assert [e["action"] for e in audit.entries(workspace)] == ["purge", "purge"]
    assert expire(workspace, "acme", now=NOW) == []  # idempotent
    assert expire(workspace, "globex", now=NOW)  # globex: adapters_days 7 still applies
    assert (other / "manifest.json").exists()


def test_golden_after_train_keeps_eval_split_and_card(workspace: Workspace, registry: Registry) -> None:
    d = workspace.dataset_dir("acme", "tickets", 1)
    d.mkdir(parents=True)
    for f in ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl", "card.json"):
        (d / f).write_text("{}\n")
    registry.put_dataset("acme", "tickets", 1, d, "0" * 64, {}, "2026-01-01")
    _run(workspace, registry, "acme", "run-x", 0)
    (workspace.root / "privacy.yaml").write_text("retention: {golden_after_train: delete}\n")
    (cert,) = after_train(workspace, "acme", "run-x", registry)
    assert sorted(p.name for p in d.iterdir()) == ["card.json", "eval.jsonl"]
    assert verify_certificate(cert)["deleted"]["file_count"] == 4


def test_golden_after_train_deletes_every_source_of_a_mixture(workspace: Workspace,
                                                               registry: Registry) -> None:
    dirs = []
    for name, version in (("tickets", 1), ("chats", 2)):
        d = workspace.dataset_dir("acme", name, version)
        d.mkdir(parents=True)
        for f in ("train.jsonl", "val.jsonl", "eval.jsonl", "card.json"):
            (d / f).write_text("{}\n")
        registry.put_dataset("acme", name, version, d, "0" * 64, {}, "2026-01-01")
        dirs.append(d)
    d = workspace.run_dir("acme", "run-mix")
    d.mkdir(parents=True)
    # a weighted `datasets:` run records its sources joined by "+"; a file source is just a name
    registry.put_run("run-mix", "acme", "sft", "tiny", "tickets@v1+chats@v2+extra.jsonl", d)
    (workspace.root / "privacy.yaml").write_text("retention: {golden_after_train: delete}\n")
    certs = after_train(workspace, "acme", "run-mix", registry)
    assert len(certs) == 2
    for d in dirs:
        assert sorted(p.name for p in d.iterdir()) == ["card.json", "eval.jsonl"]


def test_audit_cli_exit_codes(workspace: Workspace, tmp_path: Path) -> None:
    for i in range(3):
        audit.record(workspace, "eval", tenant="acme", ids={"i": i})
    env = {"PYTHONPATH": str(ROOT)}
    res = studio("--workspace", str(workspace.root), "audit", "verify", cwd=tmp_path, env=env)
    assert res.returncode == 0 and "3 entries" in res.stdout, res.stderr
    lines = audit.log_path(workspace).read_text().splitlines()
    entry = json.loads(lines[1])
    entry["tenant"] = "globex"
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    audit.log_path(workspace).write_text("\n".join(lines) + "\n")
    res = studio("--workspace", str(workspace.root), "audit", "verify", cwd=tmp_path, env=env)
    assert res.returncode == 2
    assert "seq 2" in res.stderr and "modified" in res.stderr
    res = studio("--workspace", str(workspace.root), "audit", "log", "--tenant", "acme", "--json",
                 cwd=tmp_path, env=env)
    assert [json.loads(x)["ids"]["i"] for x in res.stdout.splitlines()] == [0, 2]
