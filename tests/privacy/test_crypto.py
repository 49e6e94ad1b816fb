"""Encryption at rest: streaming seal/open, binding to tenant + path, key sources, crypto-shredding."""

from __future__ import annotations

import base64
import io
import os
import sys
import types
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from engine.errors import StudioError
from engine.privacy import crypto, keys
from engine.workspace import Workspace

KEY = os.urandom(32)


@pytest.mark.parametrize("size", [0, 1, 100, 4096, 4096 * 3, 4096 * 3 + 7])
def test_roundtrip_in_chunks(size: int) -> None:
    data = os.urandom(size)
    sealed = io.BytesIO()
    crypto.seal_stream(KEY, "acme", "raw/a.csv", io.BytesIO(data), sealed, chunk=4096)
    assert size < 16 or data not in sealed.getvalue()  # (a few random bytes can occur by chance)
    opened = io.BytesIO()
    crypto.open_stream(KEY, "acme", "raw/a.csv", io.BytesIO(sealed.getvalue()), opened)
    assert opened.getvalue() == data


def _sealed(data: bytes, chunk: int = 4096) -> bytes:
    out = io.BytesIO()
    crypto.seal_stream(KEY, "acme", "raw/a.csv", io.BytesIO(data), out, chunk=chunk)
    return out.getvalue()


def _open(blob: bytes, key: bytes = KEY, tenant: str = "acme", path: str = "raw/a.csv") -> bytes:
    out = io.BytesIO()
    crypto.open_stream(key, tenant, path, io.BytesIO(blob), out)
    return out.getvalue()


def test_tampering_truncation_and_wrong_key_fail() -> None:
    blob = _sealed(os.urandom(4096 * 3))
    flipped = bytearray(blob)
    flipped[-100] ^= 1
    with pytest.raises(InvalidTag):
        _open(bytes(flipped))
    with pytest.raises(InvalidTag):  # last chunk cut off: the new last chunk is not marked final
        _open(blob[: -(4096 + 16)])
    with pytest.raises(InvalidTag):
        _open(blob, key=os.urandom(32))


def test_files_cannot_be_swapped_between_tenants_or_paths() -> None:
    blob = _sealed(b"secret rows")
    with pytest.raises(StudioError, match="another tenant or path"):
        _open(blob, tenant="globex")
    with pytest.raises(StudioError, match="another tenant or path"):
        _open(blob, path="raw/b.csv")
    # rewriting the readable header to claim another path breaks authentication
    forged = blob.replace(b'"path":"raw/a.csv"', b'"path":"raw/b.csv"')
    with pytest.raises(InvalidTag):
        _open(forged, path="raw/b.csv")


def test_seal_tree_in_place_and_crypto_shredding(workspace: Workspace) -> None:
    tdir = workspace.tenant_dir("acme")
    raw = tdir / "raw" / "tickets.csv"
    raw.write_text("id,text\n1,hello customer\n")
    ds = tdir / "datasets" / "d" / "v1"
    ds.mkdir(parents=True)
    (ds / "train.jsonl").write_text('{"messages": []}\n')
    (tdir / "tmp" / "scratch.txt").write_text("scratch")
    key = keys.tenant_key(workspace, "acme", create=True)
    res = crypto.seal_tree(key, "acme", tdir)
    assert res["files"] == 2
    assert not raw.exists() and (tdir / "raw" / "tickets.csv.sealed").exists()
    assert b"hello customer" not in (tdir / "raw" / "tickets.csv.sealed").read_bytes()
    assert (tdir / "tmp" / "scratch.txt").exists()  # scratch is not sealed
    assert oct((tdir / "raw" / "tickets.csv.sealed").stat().st_mode & 0o777) == "0o600"
    assert crypto.open_tree(key, "acme", tdir, "raw")["files"] == 1
    assert raw.read_text().endswith("hello customer\n")
    crypto.seal_tree(key, "acme", tdir)
    # crypto-shredding: without the key the sealed data is unreadable
    assert keys.destroy_tenant_key(workspace, "acme") is not None
    with pytest.raises(StudioError, match="no encryption key"):
        keys.tenant_key(workspace, "acme")
    new_key = keys.tenant_key(workspace, "acme", create=True)
    with pytest.raises(InvalidTag):
        crypto.open_file(new_key, "acme", tdir, tdir / "raw" / "tickets.csv.sealed")
    assert not raw.exists()  # nothing half-written


def test_key_file_location_mode_and_sources(workspace: Workspace, config_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    key = keys.tenant_key(workspace, "acme", create=True)
    path = keys.tenant_key_path(workspace, "acme")
    assert path.parent.parent == config_dir / "keys"
    assert path.parent.name == keys.workspace_id(workspace)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert keys.tenant_key(workspace, "acme") == key  # stable
    env_key = os.urandom(32)
    monkeypatch.setenv("STUDIO_TENANT_KEY_ACME", base64.b64encode(env_key).decode())
    assert keys.tenant_key(workspace, "acme") == env_key
    kms = types.ModuleType("fake_kms_for_test")
    kms.get = lambda workspace_id, tenant: bytes(32) if tenant == "acme" else b""  # type: ignore
    monkeypatch.setitem(sys.modules, "fake_kms_for_test", kms)
    monkeypatch.setenv("STUDIO_KMS_HOOK", "fake_kms_for_test:get")
    assert keys.tenant_key(workspace, "acme") == bytes(32)
    with pytest.raises(StudioError, match="32 bytes"):
        keys.tenant_key(workspace, "globex")


def test_key_inside_workspace_is_refused(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_CONFIG_DIR", str(workspace.root / "conf"))
    with pytest.raises(StudioError, match="outside the workspace"):
        keys.tenant_key(workspace, "acme", create=True)
