"""The Studio dashboard in a real headless Chromium against a real `studio ui` on loopback.

Workspace (tests/web/conftest.py): real tiny refine + LoRA SFT + base/tuned eval + diff +
reproduce for tenant `default`, a refined dataset for tenant `b`. The browser logs in with a
tenant key, opens every page, compares the numbers it shows with the registry and the run/eval
files, saves a full-page screenshot per page under test-artifacts/web/, and counts every request
that would leave loopback (route interception; must stay 0). Tenant b's key gets 404 for tenant
default's objects.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest

from engine.registry import Registry

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("playwright is not installed (scripts/setup_env.sh installs it into .venv)",
                allow_module_level=True)
if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
    pytest.skip(f"{CHROMIUM} is missing (scripts/setup_env.sh installs Debian's chromium package)",
                allow_module_level=True)

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def net() -> dict[str, list[str]]:
    return {"outside": [], "requests": [], "console_errors": []}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # only this session's screenshots
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _context(browser: Browser, net: dict[str, list[str]]) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, service_workers="block")

    def route(r: Any) -> None:
        url = r.request.url
        net["requests"].append(url)
        host = urlparse(url).hostname or ""
        if url.startswith("data:") or host in LOOPBACK:
            r.continue_()
        else:
            net["outside"].append(url)
            r.abort()

    context.route("**/*", route)
    context.on("console", lambda msg: net["console_errors"].append(msg.text) if msg.type == "error" else None)
    return context


def _login(context: BrowserContext, server: str, key: str) -> Page:
    page = context.new_page()
    page.goto(server + "/login")
    page.fill("#key", key)
    page.click("#login-button")
    page.wait_for_load_state("load")
    return page


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def tenant_a(browser: Browser, server: str, filled: dict[str, Any], net: dict[str, list[str]]) -> Iterator[Page]:
    context = _context(browser, net)
    try:
        yield _login(context, server, filled["key_a"])
    finally:
        context.close()


def test_login_gives_a_strict_httponly_session(browser: Browser, server: str, filled: dict[str, Any],
                                                net: dict[str, list[str]]) -> None:
    context = _context(browser, net)
    try:
        page = context.new_page()
        page.goto(server + "/runs")
        assert page.url == server + "/login"  # not logged in: every page sends to the login form
        page.fill("#key", "sk-studio-00000000-" + "x" * 43)
        page.click("#login-button")
        assert "not valid" in page.locator("#login-error").inner_text()
        _shot(page, "login")
        page = _login(context, server, filled["key_a"])
        assert page.url == server + "/datasets"
        assert page.locator("#who").inner_text().startswith("tenant default")
        (cookie,) = context.cookies()
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert filled["key_a"] not in json.dumps(context.cookies())  # the session id, never the key
    finally:
        context.close()


def test_datasets_pages_match_the_registry(tenant_a: Page, server: str, filled: dict[str, Any]) -> None:
    page = tenant_a
    page.goto(server + "/datasets")
    registry = Registry(filled["ws"] / "registry.sqlite")
    (ds,) = registry.list_datasets("default")
    rows = page.locator("#datasets tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-tenant") == "default"
    for key in ("train", "val", "eval", "rejected"):
        assert rows.first.locator(f"td.{key}").inner_text() == str(ds["counts"][key])
    _shot(page, "datasets")

    rows.first.locator("a").click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/datasets/default/brightwave-tickets/v1")
    card = json.loads((Path(ds["path"]) / "card.json").read_text())
    for key in ("input_records", "train", "eval", "rejected"):
        assert page.locator(f'#counts .stat[data-key="{key}"] .value').inner_text() == str(ds["counts"][key])
    shown = {r.get_attribute("data-reason"): int(r.locator("td.n").inner_text())
             for r in page.locator("#rejects tbody tr").all()}
    assert shown == card["rejects"] and sum(shown.values()) == ds["counts"]["rejected"] > 0
    first = json.loads((Path(ds["path"]) / "lineage.jsonl").read_text().splitlines()[0])
    assert page.locator("#sample").input_value() == str(first["id"])
    assert str(first["split"]) in page.locator("#lineage").inner_text()
    _shot(page, "dataset")
    other = page.locator("p.ids a").nth(1)
    other_id = other.inner_text()
    other.click()
    page.wait_for_load_state("load")
    assert page.locator("#sample").input_value() == other_id


def test_runs_pages_show_loss_curve_and_certificate(tenant_a: Page, server: str, filled: dict[str, Any]) -> None:
    page = tenant_a
    registry = Registry(filled["ws"] / "registry.sqlite")
    run = registry.get_run(filled["run_id"])
    page.goto(server + "/runs")
    row = page.locator(f'#runs tr[data-run="{filled["run_id"]}"]')
    assert row.locator("td.final-loss").inner_text() == f"{run['metrics']['final_loss']:.6f}"
    assert row.locator("td.repro").inner_text().startswith("passed")
    repro_row = page.locator(f'#runs tr[data-run="{filled["repro_id"]}"]')
    assert "reproduction of " + filled["run_id"] in repro_row.locator("td.repro").inner_text()
    assert page.locator("#runs tbody tr").count() == 2
    _shot(page, "runs")

    page.goto(server + f"/runs/{filled['run_id']}")
    assert page.locator("#final-loss").inner_text() == f"{run['metrics']['final_loss']:.6f}"
    chart = page.locator("#loss-chart svg")
    assert chart.is_visible() and chart.locator("polyline").count() == 2  # loss and learning rate
    points = chart.locator("polyline").first.get_attribute("points").split()
    assert len(points) == run["metrics"]["steps"]
    cert = page.locator(".cert").first
    assert cert.locator(".verdict").inner_text().startswith("Certificate passed")
    assert cert.locator('tr[data-check="weights"] td').nth(1).inner_text() == "pass"
    assert cert.locator('tr[data-check="loss"] td').nth(2).inner_text() == "0.00000000"
    manifest = json.loads((Path(run["path"]) / "manifest.json").read_text())
    assert manifest["config_sha256"] in page.locator("#manifest-summary").inner_text()
    assert "max_steps: 6" in page.locator("#config").inner_text()
    _shot(page, "run")


def test_evals_pages_show_the_verdict_and_embed_the_report(tenant_a: Page, server: str,
                                                           filled: dict[str, Any]) -> None:
    page = tenant_a
    stats = json.loads((filled["ws"] / "tenants/default/evals" / filled["diff_id"] / "stats.json").read_text())
    page.goto(server + "/evals")
    row = page.locator(f'#diffs tr[data-diff="{filled["diff_id"]}"]')
    assert row.locator("td.verdict").inner_text() == stats["verdict"]
    registry = Registry(filled["ws"] / "registry.sqlite")
    for eid in filled["eval_ids"]:
        score = registry.get_eval(eid)["summary"]["score"]
        assert page.locator(f'#evals tr[data-eval="{eid}"] td.score').inner_text() == f"{score:.4f}"
    _shot(page, "evals")

    page.goto(server + f"/evals/{filled['diff_id']}")
    assert page.locator("#verdict").inner_text() == stats["verdict"]
    assert page.locator("#gate").inner_text() == ("passed" if stats["gate"]["passed"] else "failed")
    frame = page.frame_locator("#report-frame")
    frame.locator("#verdict-text").wait_for()
    assert frame.locator("#gate").inner_text().startswith("gate passed (require: not_worse)")
    _shot(page, "eval")


def test_models_page_shows_lineage_promotion_and_usage(tenant_a: Page, server: str,
                                                       filled: dict[str, Any]) -> None:
    page = tenant_a
    page.goto(server + "/models")
    base = page.locator('#lineage li[data-base="smollm2-135m-instruct"]')
    run = base.locator(f'li[data-run="{filled["run_id"]}"]')
    assert run.locator('[data-promoted="brightwave-triage"]').inner_text().startswith("promoted as brightwave-triage")
    assert page.locator('#usage tr[data-model="brightwave-triage"] td.requests').all_inner_texts() == ["200"]
    assert page.locator('#usage tr[data-model="b-model"]').count() == 0  # tenant b's usage
    _shot(page, "models")


def test_audit_page_verifies_the_chain_and_filters_by_tenant(tenant_a: Page, server: str,
                                                             filled: dict[str, Any]) -> None:
    page = tenant_a
    page.goto(server + "/audit")
    from engine.privacy import audit
    from engine.workspace import Workspace

    ws = Workspace(filled["ws"])
    everything, mine = audit.entries(ws), audit.entries(ws, "default")
    assert len(mine) >= 5 and len(everything) > len(mine)  # import is workspace-wide, b has one
    assert page.locator("#audit-status").inner_text() == \
        (f"Hash chain verified: {len(mine)} entries of this tenant (the whole log's chain "
         "checked), every hash recomputed.")
    assert [r.get_attribute("data-seq") for r in page.locator("#audit tbody tr").all()] == \
        [str(e["seq"]) for e in mine]
    assert {"refine", "train", "eval", "diff"} <= {e["action"] for e in mine}
    _shot(page, "audit")


def test_other_tenant_sees_404_for_tenant_a(browser: Browser, server: str, filled: dict[str, Any],
                                            net: dict[str, list[str]]) -> None:
    context = _context(browser, net)
    try:
        page = _login(context, server, filled["key_b"])
        rows = page.locator("#datasets tbody tr")
        assert rows.count() == 1 and rows.first.get_attribute("data-tenant") == "b"
        for path in (f"/runs/{filled['run_id']}", f"/runs/{filled['repro_id']}",
                     "/datasets/default/brightwave-tickets/v1", f"/evals/{filled['diff_id']}",
                     f"/evals/{filled['diff_id']}/report", f"/evals/{filled['diff_id']}/stats.json"):
            response = page.goto(server + path)
            assert response is not None and response.status == 404, path
        _shot(page, "tenant-b-404")
        for path, table in (("/runs", "#runs"), ("/evals", "#diffs")):
            page.goto(server + path)
            assert page.locator(table).count() == 0, path  # nothing of tenant default listed
        page.goto(server + "/audit")
        from engine.privacy import audit
        from engine.workspace import Workspace

        b_seqs = [str(e["seq"]) for e in audit.entries(Workspace(filled["ws"]), "b")]
        a_seqs = {str(e["seq"]) for e in audit.entries(Workspace(filled["ws"]), "default")}
        assert b_seqs and a_seqs and not a_seqs & set(b_seqs)
        assert [r.get_attribute("data-seq") for r in page.locator("#audit tbody tr").all()] == b_seqs
        assert page.goto(server + "/datasets/b/brightwave-tickets/v1").status == 200
    finally:
        context.close()


def test_admin_key_sees_every_tenant(browser: Browser, server: str, filled: dict[str, Any],
                                     net: dict[str, list[str]]) -> None:
    context = _context(browser, net)
    try:
        page = _login(context, server, filled["key_admin"])
        assert page.locator("#who").inner_text().startswith("admin")
        tenants = sorted(r.get_attribute("data-tenant") for r in page.locator("#datasets tbody tr").all())
        assert tenants == ["b", "default"]
        assert page.goto(server + f"/runs/{filled['run_id']}").status == 200
        assert page.goto(server + "/datasets/b/brightwave-tickets/v1").status == 200
    finally:
        context.close()


def test_no_request_left_loopback_and_no_external_url(server: str, net: dict[str, list[str]],
                                                      filled: dict[str, Any]) -> None:
    import httpx

    assert net["requests"], "the browser tests above made no request"
    assert net["outside"] == []
    # the only errors: the 401 of the wrong key and the 404s tenant b was meant to get
    unexpected = [e for e in net["console_errors"]
                  if not e.startswith(("Failed to load resource: the server responded with a status of 401",
                                       "Failed to load resource: the server responded with a status of 404"))]
    assert unexpected == []  # no CSP violation, no failed stylesheet or frame
    with httpx.Client(base_url=server) as client:
        client.post("/login", data={"key": filled["key_a"]}, headers={"Origin": server})
        for path in ("/datasets", "/datasets/default/brightwave-tickets/v1", "/runs",
                     f"/runs/{filled['run_id']}", "/evals", f"/evals/{filled['diff_id']}",
                     f"/evals/{filled['diff_id']}/report", "/models", "/audit", "/static/style.css",
                     "/login"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "http://" not in response.text and "https://" not in response.text, path
    shots = {p.name: p.stat().st_size for p in ARTIFACTS.glob("*.png")}  # this session's (emptied first)
    for name in ("login", "datasets", "dataset", "runs", "run", "evals", "eval", "models", "audit",
                 "tenant-b-404"):
        assert shots.get(f"{name}.png", 0) > 5_000, name
