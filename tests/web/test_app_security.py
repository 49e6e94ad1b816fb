"""Dashboard security without a browser: origin checks, cookies, revocation, the audit-chain verifier."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from engine.web.audit import read_and_verify

def test_audit_view_reports_the_privacy_chain_check(tmp_path: Path) -> None:
    from engine.privacy import audit
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws").ensure()
    assert read_and_verify(ws).present is False
    for action, tenant, ids in (("refine", "t", {"dataset": "d@v1"}), ("train", "t", {"run": "r1"}),
                                ("purge", None, {})):
        audit.record(ws, action, tenant=tenant, actor="a", ids=ids)
    status = read_and_verify(ws)
    assert (status.present, status.ok, status.entries) == (True, True, 3)
    path = audit.log_path(ws)
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["ids"] = {"run": "r2"}  # an edit without re-hashing
    path.write_text("\n".join([lines[0], json.dumps(edited), lines[2]]) + "\n")
    status = read_and_verify(ws)
    assert (status.ok, status.broken_at) == (False, 2) and "modified" in status.reason
    assert [r["seq"] for r in status.rows] == [1, 2, 3]  # still listed, flagged as broken
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")  # a deleted line
    status = read_and_verify(ws)
    assert (status.ok, status.broken_at) == (False, 2) and "missing" in status.reason
    path.write_text("\n".join(lines) + "\n" + '{"action":"ui.lo')  # an interrupted append
    status = read_and_verify(ws)
    assert (status.ok, status.recoverable, status.entries) == (False, True, 3)
    assert "interrupted append" in status.reason


def test_tenant_audit_page_counts_only_its_own_entries(tmp_path: Path) -> None:
    """A tenant's audit page lists and counts that tenant's entries only (the chain check still
    covers the whole log); an admin sees every entry."""
    from fastapi.testclient import TestClient

    from engine.privacy import audit
    from engine.serve.keys import KeyStore
    from engine.web.app import create_app
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws").ensure()
    for i in range(5):
        audit.record(ws, "train", tenant="other", actor="a", ids={"run": f"r{i}"})
    audit.record(ws, "refine", tenant="mine", actor="a", ids={"dataset": "d@v1"})
    keys = KeyStore(ws.registry_path)
    token, _ = keys.create("mine", "dash")
    admin, _ = keys.create("mine", "ops", role="admin")
    for key, expect in ((token, 2), (admin, 8)):  # + one ui.login of tenant mine per login
        with TestClient(create_app(ws)) as client:
            r = client.post("/login", data={"key": key}, headers={"Origin": "http://testserver"},
                            follow_redirects=False)
            assert r.status_code == 303
            page = client.get("/audit").text
        assert f"{expect} entries" in page, page
        assert page.count("<tr data-seq=") == expect
        if key == token:
            assert ">other<" not in page


def test_login_post_needs_same_origin_and_pages_need_a_session(server: str, filled: dict[str, Any]) -> None:
    with httpx.Client(base_url=server) as client:
        assert client.get("/runs").status_code == 303
        for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": "null"}):
            r = client.post("/login", data={"key": filled["key_a"]}, headers=headers)
            assert r.status_code == 403 and "studio_session" not in r.cookies
        from engine.privacy import audit
        from engine.workspace import Workspace

        logins = len([e for e in audit.entries(Workspace(filled["ws"])) if e["action"] == "ui.login"])
        r = client.post("/login", data={"key": filled["key_a"]}, headers={"Origin": server})
        assert r.status_code == 303
        last = audit.entries(Workspace(filled["ws"]))[-1]  # the login is audited (key id, no secret)
        assert last["action"] == "ui.login" and last["tenant"] == "default"
        assert last["ids"]["key_id"] == filled["key_a"].split("-")[2]
        assert len([e for e in audit.entries(Workspace(filled["ws"]))
                    if e["action"] == "ui.login"]) == logins + 1  # refused logins are not sessions
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = client.get("/runs")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert client.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.get("/runs").status_code == 200
        assert client.post("/logout", headers={"Origin": server}).status_code == 303
        assert client.get("/runs").status_code == 303


def test_revoked_key_ends_its_sessions(server: str, filled: dict[str, Any]) -> None:
    token, info = filled["keys"].create("default", "short-lived")
    with httpx.Client(base_url=server) as client:
        client.post("/login", data={"key": token}, headers={"Origin": server})
        assert client.get("/datasets").status_code == 200
        filled["keys"].revoke(info.key_id)
        assert client.get("/datasets").status_code == 303


@pytest.mark.parametrize("path", ["/runs/..%2F..%2Fetc", "/evals/diff-..%2F..", "/evals/x/report",
                                  "/datasets/default/..%2F/v1", "/runs/run-nope"])
def test_odd_ids_are_404(server: str, filled: dict[str, Any], path: str) -> None:
    with httpx.Client(base_url=server) as client:
        client.post("/login", data={"key": filled["key_admin"]}, headers={"Origin": server})
        assert client.get(path).status_code == 404


def test_server_logged_no_customer_text(server: str, filled: dict[str, Any]) -> None:
    with httpx.Client(base_url=server) as client:
        client.post("/login", data={"key": filled["key_a"]}, headers={"Origin": server})
        client.get("/datasets/default/brightwave-tickets/v1")
    log = (filled["proj"] / "ui.log").read_text()
    assert filled["key_a"] not in log
    assert "GET /" not in log  # no access log lines at all


def test_sessions_expire_when_idle() -> None:
    from engine.web.app import Sessions

    sessions = Sessions(idle_s=0.05)
    info = SimpleNamespace(key_id="k1", tenant="t", role="tenant", name="n")
    sid = sessions.create(info)
    assert sessions.get(sid) is not None and sessions.get("nope") is None
    time.sleep(0.1)
    assert sessions.get(sid) is None
    stale = sessions.create(info)
    time.sleep(0.1)
    sessions.create(info)
    assert stale not in sessions._by_id  # purged when the next session started


def test_shipped_assets_reference_nothing_outside() -> None:
    import re

    import engine.web

    root = Path(engine.web.__file__).parent
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert {p.name for p in files} >= {"base.html.jinja", "style.css"}
    for p in files:
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"https?://|(src|href)=\"//|url\(|@import", text), p
