"""API keys: hashed at rest, shown once, tenant-scoped, revocable."""

import sqlite3

import pytest

from engine.errors import StudioError
from engine.serve.keys import KeyStore


def test_keys_are_hashed_scoped_and_revocable(tmp_path):
    store = KeyStore(tmp_path / "registry.sqlite")
    token_a, info_a = store.create("acme", "ci")
    token_b, _ = store.create("globex")
    admin, _ = store.create("ops", "root", role="admin")
    raw = (tmp_path / "registry.sqlite").read_bytes()
    for token in (token_a, token_b, admin):
        assert token.encode() not in raw and token.split("-")[-1].encode() not in raw
    assert store.authenticate(token_a).tenant == "acme"
    assert store.authenticate(token_b).tenant == "globex"
    assert store.authenticate(admin).is_admin and not store.authenticate(token_a).is_admin
    assert [k.key_id for k in store.list("acme")] == [info_a.key_id]
    # a wrong secret with a real key id, garbage and None are all refused
    forged = token_a[: token_a.rindex("-") + 1] + "A" * 43
    for bad in (forged, "sk-studio-zz", "", None, token_a + "x"):
        assert store.authenticate(bad) is None
    store.revoke(info_a.key_id)
    assert store.authenticate(token_a) is None
    assert store.list("acme") == [] and store.list("acme", include_revoked=True)[0].revoked_at


def test_bad_inputs_are_user_errors(tmp_path):
    store = KeyStore(tmp_path / "registry.sqlite")
    with pytest.raises(StudioError):
        store.create("../etc")
    with pytest.raises(StudioError):
        store.create("acme", role="root")
    with pytest.raises(StudioError):
        store.revoke("deadbeef")
    with sqlite3.connect(tmp_path / "registry.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 0
