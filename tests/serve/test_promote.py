"""Promotion behind the Eval & Diff gate, demotion, and the CLI verbs that drive them."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from engine.errors import GateFailed, StudioError
from engine.eval.diff import diff_evals
from engine.serve.promote import ServedModels, adapter_dir, demote, find_gate, promote
from tests.helpers import studio as _studio

ROOT = Path(__file__).resolve().parents[2]


def studio(*args, **kw):
    """The CLI of this checkout (not whichever `engine` is installed), in a fresh interpreter."""
    return _studio(*args, env={"PYTHONPATH": str(ROOT)}, **kw)


def _eval(ws, registry, tenant, eval_id, model_ref, scores):
    """An eval directory as `studio eval` writes it (summary + outputs), registered."""
    out = ws.eval_dir(tenant, eval_id)
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"eval_id": eval_id, "model_ref": model_ref}))
    with (out / "outputs.jsonl").open("w") as f:
        for i, s in enumerate(scores):
            f.write(json.dumps({"item_id": f"i{i}", "item_hash": f"h{i}", "score": s}) + "\n")
    registry.put_eval(eval_id, tenant, "eval", model_ref, "d@v1", out, {"n": len(scores)})


def _run(ws, registry, tenant, run_id, adapter_src, status="succeeded"):
    path = ws.run_dir(tenant, run_id)
    shutil.copytree(adapter_src, path / "adapter")
    registry.put_run(run_id, tenant, "sft", "tiny", "d@v1", path)
    registry.finish_run(run_id, status, {})
    return path


def _diff(ws, tenant, base_id, tuned_id, require="better"):
    b, t = ws.eval_dir(tenant, base_id), ws.eval_dir(tenant, tuned_id)
    return diff_evals(b, t, ws.eval_dir(tenant, f"diff-{base_id}-vs-{tuned_id}"), require=require)


def test_promote_needs_a_passing_gate_on_that_run(workspace, registry, tiny_adapters):
    _run(workspace, registry, "acme", "run-good", tiny_adapters["a1"])
    _run(workspace, registry, "acme", "run-flat", tiny_adapters["a2"])
    _eval(workspace, registry, "acme", "ev-base", "tiny", [0.0] * 30)
    _eval(workspace, registry, "acme", "ev-good", "run-good", [1.0] * 25 + [0.0] * 5)
    _eval(workspace, registry, "acme", "ev-flat", "run-flat", [0.0] * 30)

    with pytest.raises(GateFailed, match="no diff"):  # nothing compared yet
        promote(workspace, registry, "run-good", "support")
    assert _diff(workspace, "acme", "ev-base", "ev-flat").gate_passed is False
    with pytest.raises(GateFailed, match="gate 'better' verdict no_difference"):
        promote(workspace, registry, "run-flat", "support")
    assert _diff(workspace, "acme", "ev-base", "ev-flat", require="none").gate_passed  # does not count
    with pytest.raises(GateFailed, match="gate 'none' verdict no_difference"):
        promote(workspace, registry, "run-flat", "support")
    assert ServedModels(registry.path).list() == []

    assert _diff(workspace, "acme", "ev-base", "ev-good").gate_passed
    row = promote(workspace, registry, "run-good", "support")
    assert row["gate"] == "diff-ev-base-vs-ev-good" and row["forced"] == 0
    assert [g.diff_id for g in find_gate(workspace, registry, "acme", "run-good") if g.passed] == \
        ["diff-ev-base-vs-ev-good"]

    forced = promote(workspace, registry, "run-flat", "experimental", force=True)
    assert forced["gate"] is None and forced["forced"] == 1
    rows = {r["name"]: r for r in ServedModels(registry.path).list("acme")}
    assert rows["support"]["run_id"] == "run-good" and rows["experimental"]["forced"] == 1
    assert rows["support"]["adapter_path"] == "runs/run-good/adapter"  # tenant-relative
    assert adapter_dir(workspace, "acme", rows["support"]["adapter_path"]) == \
        workspace.root / "tenants" / "acme" / "runs" / "run-good" / "adapter"

    demote(workspace, "acme", "experimental")
    assert [r["name"] for r in ServedModels(registry.path).list("acme")] == ["support"]
    with pytest.raises(StudioError):
        demote(workspace, "acme", "experimental")


def test_promote_refuses_unfinished_or_unknown_runs(workspace, registry, tiny_adapters):
    _run(workspace, registry, "acme", "run-bad", tiny_adapters["a1"], status="failed")
    for run_id in ("run-bad", "run-missing"):
        with pytest.raises(StudioError):
            promote(workspace, registry, run_id, "x", force=True)
    with pytest.raises(StudioError):
        promote(workspace, registry, "run-bad", "Bad Name!", force=True)


def test_cli_promote_keys_and_usage(workspace, registry, tiny_adapters, tmp_path):
    from engine.serve.usage import UsageStore

    _run(workspace, registry, "acme", "run-1", tiny_adapters["a1"])
    ws = ["--workspace", str(workspace.root)]
    refused = studio(*ws, "serve", "promote", "run-1", "--name", "support", cwd=tmp_path, timeout=120)
    assert refused.returncode == 3 and "no passing Eval & Diff gate" in refused.stderr
    ok = studio(*ws, "serve", "promote", "run-1", "--name", "support", "--force", cwd=tmp_path, timeout=120)
    assert ok.returncode == 0 and "FORCED" in ok.stdout
    listed = json.loads(studio(*ws, "serve", "list", "--json", cwd=tmp_path).stdout)
    assert [(r["tenant"], r["name"], r["forced"]) for r in listed] == [("acme", "support", 1)]

    created = studio(*ws, "keys", "create", "--tenant", "acme", "--name", "ci", cwd=tmp_path)
    token = created.stdout.strip()
    assert created.returncode == 0 and token.startswith("sk-studio-")
    key_id = token.split("-")[2]
    with sqlite3.connect(workspace.registry_path) as db:
        assert db.execute("SELECT COUNT(*) FROM api_keys WHERE sha256 LIKE ?", (f"%{token}%",)).fetchone()[0] == 0
    keys = json.loads(studio(*ws, "keys", "list", "--json", cwd=tmp_path).stdout)
    assert [(k["key_id"], k["tenant"]) for k in keys] == [(key_id, "acme")] and token not in json.dumps(keys)
    assert studio(*ws, "keys", "revoke", key_id, cwd=tmp_path).returncode == 0
    assert json.loads(studio(*ws, "keys", "list", "--json", cwd=tmp_path).stdout) == []
    # the audit log: the refused promotion failed, the forced one succeeded (flagged), keys by id
    from engine.privacy import audit

    log = [(e["action"], e["tenant"], e["ids"]) for e in audit.entries(workspace)]
    assert [a for a, _, _ in log] == ["serve.promote.failed", "serve.promote", "keys.create",
                                      "keys.revoke"]
    assert log[1][1] == "acme" and log[1][2]["forced"] is True and log[1][2]["run_id"] == "run-1"
    assert log[2][2]["key_id"] == key_id and log[3][2]["key_id"] == key_id
    assert token not in audit.log_path(workspace).read_text()
    assert audit.verify(workspace).ok

    store = UsageStore(workspace.registry_path)
    store.record("acme", "support", prompt_tokens=10, completion_tokens=5, day="2026-11-02")
    store.record("acme", "support", prompt_tokens=7, completion_tokens=3, day="2026-11-20")
    store.record("acme", "support", error=True, day="2026-11-20")
    store.record("globex", "support", prompt_tokens=1, completion_tokens=1, day="2026-11-20")
    store.record("acme", "support", prompt_tokens=99, completion_tokens=99, day="2026-10-31")
    usage = studio(*ws, "stats", "usage", "--month", "2026-11", "--tenant", "acme", "--json", cwd=tmp_path)
    assert json.loads(usage.stdout) == [{"tenant": "acme", "model": "support", "month": "2026-11", "days": 2,
                                         "requests": 3, "prompt_tokens": 17, "completion_tokens": 8,
                                         "errors": 1}]
    table = studio(*ws, "stats", "usage", "--month", "2026-11", cwd=tmp_path)
    assert "globex" in table.stdout and "acme" in table.stdout
    bad = studio(*ws, "stats", "usage", "--month", "2026-13", cwd=tmp_path)
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr


def test_promote_refuses_a_pickle_adapter(workspace, registry, tiny_adapters):
    import torch
    from safetensors.torch import load_file

    path = _run(workspace, registry, "acme", "run-pickle", tiny_adapters["a1"])
    weights = path / "adapter" / "adapter_model.safetensors"
    torch.save(load_file(weights), path / "adapter" / "adapter_model.bin")
    weights.unlink()
    with pytest.raises(StudioError, match="adapter_model.safetensors"):
        promote(workspace, registry, "run-pickle", "support", force=True)
    assert ServedModels(registry.path).list() == []


def test_promote_of_an_encrypted_tenant_stores_the_stable_path(workspace, registry, tiny_adapters,
                                                               tmp_path, monkeypatch):
    """During a job an encrypted tenant's directory is a symlink to a temporary plaintext view;
    the promotion must name the adapter by its place in the tenant, not inside that view."""
    from engine.privacy import crypto, keys, view

    views = tmp_path / "views"
    monkeypatch.setenv("STUDIO_VIEW_DIR", str(views))
    tdir = workspace.tenant_dir("acme")
    key = keys.tenant_key(workspace, "acme", create=True)
    crypto.seal_tree(key, "acme", tdir)
    v = view.open_view(workspace, "acme", key)
    try:
        assert tdir.is_symlink()
        _run(workspace, registry, "acme", "run-1", tiny_adapters["a1"])
        row = promote(workspace, registry, "run-1", "support", force=True)
    finally:
        view.close_view(v, key)
    stored = ServedModels(registry.path).get("acme", "support")["adapter_path"]
    assert stored == row["adapter_path"] == "runs/run-1/adapter"
    assert str(views) not in stored
    assert adapter_dir(workspace, "acme", stored) == tdir / "runs" / "run-1" / "adapter"
    assert (tdir / "runs" / "run-1" / "adapter" / "adapter_config.json.sealed").is_file()
    v = view.open_view(workspace, "acme", key)  # the next job finds the adapter under that path
    try:
        assert (adapter_dir(workspace, "acme", stored) / "adapter_model.safetensors").is_file()
    finally:
        view.close_view(v, key)
    with pytest.raises(StudioError):
        adapter_dir(workspace, "acme", "../globex/runs/run-1/adapter")
