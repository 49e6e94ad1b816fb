"""Purge: exactly the selected data goes (files + registry rows), a signed certificate proves it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.errors import StudioError
from engine.privacy import audit, keys
from engine.privacy.purge import purge, select, verify_certificate
from engine.registry import Registry
from engine.workspace import Workspace


def _populate(ws: Workspace, reg: Registry, tenant: str) -> None:
    for v in (1, 2):
        d = ws.dataset_dir(tenant, "tickets", v)
        d.mkdir(parents=True)
        (d / "train.jsonl").write_text(f'{{"v": {v}}}\n')
        (d / "pii_vault.enc").write_bytes(os.urandom(40))
        reg.put_dataset(tenant, "tickets", v, d, f"{v}" * 64, {"train": 1}, "2026-01-01")
    r = ws.run_dir(tenant, f"run-{tenant}")
    (r / "adapter").mkdir(parents=True)
    (r / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * 100)
    reg.put_run(f"run-{tenant}", tenant, "sft", "tiny", "tickets@v1", r)
    e = ws.eval_dir(tenant, f"eval-{tenant}")
    e.mkdir(parents=True)
    (e / "outputs.jsonl").write_text("{}\n")
    reg.put_eval(f"eval-{tenant}", tenant, "gen", f"run-{tenant}", "tickets@v1", e, {})
    cache = ws.tenant_dir(tenant) / "cache"
    cache.mkdir(exist_ok=True)
    (cache / "generations.sqlite").write_bytes(b"x")


@pytest.fixture
def populated(workspace: Workspace, registry: Registry) -> tuple[Workspace, Registry]:
    _populate(workspace, registry, "acme")
    _populate(workspace, registry, "globex")
    return workspace, registry


def test_purge_one_dataset_version(populated: tuple[Workspace, Registry]) -> None:
    ws, reg = populated
    target = select(ws, "acme", dataset="tickets:v1")
    cert, path = purge(ws, "acme", target, actor="dpo")
    assert not ws.dataset_dir("acme", "tickets", 1).exists()
    assert ws.dataset_dir("acme", "tickets", 2).is_dir()
    assert reg.get_dataset("acme", "tickets", 1) is None and reg.get_dataset("acme", "tickets", 2)
    assert reg.get_dataset("globex", "tickets", 1) is not None
    files = {f["path"] for f in cert["deleted"]["files"]}
    assert files == {"tenants/acme/datasets/tickets/v1/train.jsonl",
                     "tenants/acme/datasets/tickets/v1/pii_vault.enc"}
    assert cert["deleted"]["registry_rows"] == {"datasets": 1}
    assert cert["by"] == "dpo" and cert["tenant"] == "acme"
    assert path.parent == ws.root / "certificates"
    assert verify_certificate(path)["certificate_id"] == cert["certificate_id"]
    # the certificate points at the audit entry that records the purge
    last = audit.entries(ws)[-1]
    assert last["action"] == "purge" and last["hash"] == cert["audit_head"]
    assert last["ids"]["certificate_id"] == cert["certificate_id"]
    assert audit.verify(ws).ok


def test_purge_run_and_eval(populated: tuple[Workspace, Registry]) -> None:
    ws, reg = populated
    with pytest.raises(StudioError, match="unknown run"):  # another tenant's run
        select(ws, "acme", run="run-globex")
    cert, _ = purge(ws, "acme", select(ws, "acme", run="run-acme"))
    assert not ws.run_dir("acme", "run-acme").exists() and reg.get_run("run-acme") is None
    assert cert["deleted"]["files"][0]["size"] == 100
    purge(ws, "acme", select(ws, "acme", eval_id="eval-acme"))
    assert not ws.eval_dir("acme", "eval-acme").exists() and reg.get_eval("eval-acme") is None
    assert ws.eval_dir("globex", "eval-globex").exists() and reg.get_run("run-globex")


def test_purge_all_removes_tenant_rows_cache_and_key(populated: tuple[Workspace, Registry]) -> None:
    ws, reg = populated
    key_path = keys.tenant_key_path(ws, "acme")
    keys.tenant_key(ws, "acme", create=True)
    assert key_path.exists()
    cert, path = purge(ws, "acme", select(ws, "acme", everything=True))
    assert not ws.tenant_dir("acme", create=False).exists()
    assert not key_path.exists()
    assert reg.list_datasets("acme") == [] and reg.list_runs("acme") == []
    assert reg.list_evals("acme") == [] and reg.list_datasets("globex")
    paths = {f["path"] for f in cert["deleted"]["files"]}
    assert "tenants/acme/cache/generations.sqlite" in paths
    assert cert["deleted"]["keys_destroyed"] == ["tenant-data-key"]
    verify_certificate(path)
    text = path.read_text()
    assert '"v": 1' not in text  # sizes and hashes, not content


def test_tampered_or_foreign_certificate_fails(populated: tuple[Workspace, Registry],
                                               tmp_path: Path) -> None:
    ws, _ = populated
    _, path = purge(ws, "acme", select(ws, "acme", run="run-acme"))
    cert = json.loads(path.read_text())
    cert["deleted"]["files"][0]["sha256"] = "0" * 64
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(cert))
    with pytest.raises(StudioError, match="signature is invalid"):
        verify_certificate(forged)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = keys.public_pem(Ed25519PrivateKey.generate())
    with pytest.raises(StudioError, match="different key"):
        verify_certificate(path, other)
    verify_certificate(path, keys.public_pem(keys.signing_key(ws)))
    cert = json.loads(path.read_text())
    del cert["when"]
    forged.write_text(json.dumps(cert))
    with pytest.raises(StudioError, match="not a deletion certificate"):
        verify_certificate(forged)


def test_signing_key_outside_workspace_0600(populated: tuple[Workspace, Registry],
                                            config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws, _ = populated
    keys.signing_key(ws)
    key_file = config_dir / "signing-key.pem"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("STUDIO_SIGNING_KEY", str(ws.root / "key.pem"))
    with pytest.raises(StudioError, match="outside the workspace"):
        keys.signing_key(ws)


@pytest.mark.parametrize("kwargs", [{"run": "../globex"}, {"dataset": "../../x"}, {"eval_id": "a/b"},
                                    {"run": "nope"}, {}, {"run": "run-acme", "eval_id": "eval-acme"},
                                    {"run": "run-globex"}, {"dataset": "tickets:vx"}])
def test_bad_selections_are_refused(populated: tuple[Workspace, Registry], kwargs: dict) -> None:
    ws, _ = populated
    with pytest.raises(StudioError):
        select(ws, "acme", **kwargs)
    assert ws.run_dir("globex", "run-globex").exists()
