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


def _forge_with_own_key(path: Path, out: Path) -> None:
    """Red team: alter a certificate, embed one's own public key and sign with it."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    cert = json.loads(path.read_text())
    cert["deleted"]["files"][0]["sha256"] = "0" * 64
    mallory = Ed25519PrivateKey.generate()
    cert["public_key"] = keys.public_pem(mallory)
    body = {k: v for k, v in cert.items() if k != "signature"}
    cert["signature"] = base64.b64encode(mallory.sign(audit.canonical(body))).decode()
    out.write_text(json.dumps(cert))


def test_a_certificate_signed_by_its_own_embedded_key_is_not_trusted(
        populated: tuple[Workspace, Registry], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.cli import main

    def cli(*argv: str) -> int:
        try:
            main(["--workspace", str(ws.root), *argv])
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    ws, _ = populated
    _, path = purge(ws, "acme", select(ws, "acme", run="run-acme"))
    forged = tmp_path / "forged.json"
    _forge_with_own_key(path, forged)
    with pytest.raises(StudioError, match="different key"):
        verify_certificate(forged)  # no key given: the workspace's audit key, not the embedded one
    capsys.readouterr()
    assert cli("audit", "verify-certificate", str(forged)) == 2
    assert "different key" in capsys.readouterr().err
    assert cli("audit", "verify-certificate", str(path)) == 0
    said = capsys.readouterr().out
    own = keys.fingerprint(keys.signing_key(ws, create=False))
    assert "valid" in said and own in said and "the workspace's audit key" in said
    # where there is no audit key, it refuses (it does not fall back to the embedded key)
    monkeypatch.setenv("STUDIO_CONFIG_DIR", str(tmp_path / "elsewhere"))
    assert cli("audit", "verify-certificate", str(path)) == 2
    err = capsys.readouterr().err
    assert "no audit key" in err and "--public-key" in err
    with pytest.raises(StudioError, match="no audit key"):
        verify_certificate(path)
