"""The dashboard's FastAPI app: login with an API key, server-side sessions, read-only pages per tenant.

Security model: a key (engine/serve/keys.py) is pasted once on /login; the server keeps a session
(random id → key id, tenant, role) in memory and sets it as an HttpOnly, SameSite=Strict cookie.
Every page is a GET that only reads; the two POSTs (login, logout) check the Origin header. Each
route asks a `View` scoped to the session's tenant (all tenants for an admin key), and anything
outside it is a 404, exactly like an id that does not exist. Pages load only what this server
serves (CSS from /static, charts as inline SVG, no scripts); a Content-Security-Policy says so to
the browser too. Nothing is logged per request: no customer text can reach a log.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from engine.privacy import audit as audit_log
from engine.serve.keys import KeyStore
from engine.web.data import View, safe_id, table_rows
from engine.workspace import Workspace

HERE = Path(__file__).resolve().parent
COOKIE = "studio_session"
SESSION_IDLE_S = 8 * 3600
CSP_PAGE = ("default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
CSP_REPORT = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'self'; sandbox allow-same-origin")


@dataclass
class Session:
    key_id: str
    tenant: str
    role: str
    name: str
    last_seen: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Sessions:
    """In-memory sessions (a restart logs everyone out); idle ones expire."""

    def __init__(self, idle_s: float = SESSION_IDLE_S):
        self.idle_s = idle_s
        self._by_id: dict[str, Session] = {}

    def create(self, info: Any) -> str:
        now = time.monotonic()
        for old in [k for k, s in self._by_id.items() if now - s.last_seen > self.idle_s]:
            del self._by_id[old]  # expired sessions go when a new one starts
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = Session(info.key_id, info.tenant, info.role, info.name, now)
        return sid

    def get(self, sid: str | None) -> Session | None:
        s = self._by_id.get(sid or "")
        if s is None:
            return None
        now = time.monotonic()
        if now - s.last_seen > self.idle_s:
            self._by_id.pop(sid or "", None)
            return None
        s.last_seen = now
        return s

    def drop(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda x, d=4: "—" if x is None else (f"{x:.{d}f}" if isinstance(x, float) else str(x))
    env.filters["pct"] = lambda x: "—" if x is None else f"{100.0 * float(x):.1f}%"
    env.filters["short"] = lambda x, n=12: "—" if not x else str(x)[:n]
    return env


def create_app(ws: Workspace) -> FastAPI:
    """The dashboard for one workspace (read-only)."""
    app = FastAPI(title="Expert Studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    env = _templates()
    sessions = Sessions()
    keys = KeyStore(ws.registry_path)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP_PAGE)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"  # no-referrer makes Chromium send Origin: null
        response.headers["Cache-Control"] = "no-store"
        return response

    def page(name: str, request: Request, status: int = 200, **ctx: Any) -> HTMLResponse:
        session = sessions.get(request.cookies.get(COOKIE))
        html = env.get_template(name).render(session=session, path=request.url.path, **ctx)
        return HTMLResponse(html, status_code=status)

    def live(session: Session) -> bool:
        rows = table_rows(ws.registry_path, "api_keys", "SELECT revoked_at FROM api_keys WHERE key_id=?",
                          (session.key_id,))
        return bool(rows) and rows[0]["revoked_at"] is None

    def viewer(request: Request) -> View | None:
        sid = request.cookies.get(COOKIE)
        session = sessions.get(sid)
        if session is None:
            return None
        if not live(session):  # a revoked key ends its sessions
            sessions.drop(sid)
            return None
        return View(ws, None if session.is_admin else session.tenant)

    def to_login() -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    def not_found(request: Request) -> HTMLResponse:
        return page("error.html.jinja", request, status=404, title="Not found",
                    message="There is nothing here, or it belongs to another tenant.")

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        return origin is not None and origin == f"{request.url.scheme}://{request.headers.get('host', '')}"

    # ------------------------------------------------------------------------------- login
    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return page("login.html.jinja", request, title="Log in", error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return page("error.html.jinja", request, status=403, title="Forbidden",
                        message="Cross-origin login refused.")
        form = await request.form()
        info = keys.authenticate(str(form.get("key") or "").strip())
        if info is None:
            return page("login.html.jinja", request, status=401, title="Log in",
                        error="That key is not valid for this workspace (or was revoked).")
        sessions.drop(request.cookies.get(COOKIE))
        audit_log.record(ws, "ui.login", tenant=info.tenant, actor=f"key:{info.key_id}",
                     ids={"key_id": info.key_id, "role": info.role})
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, sessions.create(info), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    @app.post("/logout")
    def logout(request: Request) -> Response:
        if not same_origin(request):
            return page("error.html.jinja", request, status=403, title="Forbidden",
                        message="Cross-origin logout refused.")
        sessions.drop(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # ------------------------------------------------------------------------------- pages
    @app.get("/")
    def home(request: Request) -> Response:
        return RedirectResponse("/datasets", status_code=303) if viewer(request) else to_login()

    @app.get("/datasets")
    def datasets(request: Request) -> Response:
        view = viewer(request)
        if view is None:
            return to_login()
        return page("datasets.html.jinja", request, title="Datasets", datasets=view.datasets())

    @app.get("/datasets/{tenant}/{name}/v{version}")
    def dataset(request: Request, tenant: str, name: str, version: int,
                sample: str | None = None) -> Response:
        view = viewer(request)
        if view is None:
            return to_login()
        d = view.dataset(tenant, name, version, sample) if safe_id(tenant) and safe_id(name) else None
        if d is None:
            return not_found(request)
        return page("dataset.html.jinja", request, title=f"{name}@v{version}", d=d)

    @app.get("/runs")
    def runs(request: Request) -> Response:
        view = viewer(request)
        if view is None:
            return to_login()
        return page("runs.html.jinja", request, title="Runs", runs=view.runs())

    @app.get("/runs/{run_id}")
    def run(request: Request, run_id: str) -> Response:
        view = viewer(request)
        if view is None:
            return to_login()
        r = view.run(run_id)
        if r is None:
            return not_found(request)
        manifest = dict(r["manifest"] or {})
        lockfile = manifest.pop("lockfile", None) or {}
        return page("run.html.jinja", request, title=run_id, r=r, manifest=manifest,
                    lockfile_count=len(lockfile))

    @app.get("/evals")
    def evals(request: Request) -> Response:
        view = viewer(request)
        if view is None:
            return to_login()
        return page("evals.html.jinja", request, title="Evals", evals=view.evals(), diffs=view.diffs())

    @app.get("/evals/{diff_id}")
    def eval_diff(request: Request, diff_id: str) -> Response:
        view = viewer(request)
        if view is None:
            return to_login()
        d = view.diff(diff_id)
        if d is None:
            return not_found(request)
        return page("eval.html.jinja", request, title=diff_id, d=d)

    @app.get("/evals/{diff_id}/{file}")
    def eval_file(request: Request, diff_id: str, file: str) -> Response:
        """The diff's own report.html (framed by the eval page) and the two files it links to."""
        view = viewer(request)
        if view is None:
            return to_login()
        d = view.diff(diff_id)
        names = {"report": ("report.html", "text/html"), "stats.json": ("stats.json", "application/json"),
                 "pairs.jsonl": ("pairs.jsonl", "text/plain")}
        if d is None or file not in names or not (d["dir"] / names[file][0]).is_file():
            return not_found(request)
        name, media = names[file]
        return FileResponse(d["dir"] / name, media_type=media,
                            headers={"Content-Security-Policy": CSP_REPORT,
                                     "X-Frame-Options": "SAMEORIGIN"})

    @app.get("/models")
    def models(request: Request) -> Response:
        view = viewer(request)
        if view is None:
            return to_login()
        served = view.served()
        return page("models.html.jinja", request, title="Models", lineage=view.model_lineage(),
                    served=served, usage=view.usage_by_month(),
                    has_served_table=view.has_table("served_models"),
                    has_usage_table=view.has_table("usage"))

    @app.get("/audit")
    def audit(request: Request) -> Response:
        view = viewer(request)
        if view is None:
            return to_login()
        return page("audit.html.jinja", request, title="Audit log", audit=view.audit())

    @app.exception_handler(404)
    async def missing(request: Request, exc: Any) -> Response:
        if request.url.path.startswith("/static/"):
            return Response("not found", status_code=404, media_type="text/plain")
        return not_found(request)

    return app
