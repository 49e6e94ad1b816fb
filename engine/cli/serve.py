"""Serving verbs: `studio serve CONFIG`, `studio serve promote|demote|list`, `studio keys …`, `studio bench serve`."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import click
import typer
from typer.core import TyperGroup

from engine.cli.context import JsonOpt, OptionalTenantOpt, TenantOpt, emit, load, registry, table, ws
from engine.console import err, out
from engine.errors import StudioError
from engine.offline import confine_caches
from engine.privacy import jobs


class _ServeGroup(TyperGroup):
    """`studio serve CONFIG` is `studio serve start CONFIG`; the other words are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["start", *args]
        return super().parse_args(ctx, args)


serve_app = typer.Typer(cls=_ServeGroup, no_args_is_help=True,
                        help="Serve models over an OpenAI-compatible API (`studio serve CONFIG`), "
                             "and manage what is served.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the gateway (per tenant, or admin).")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks.")


# ----------------------------------------------------------------------------------- serve
@serve_app.command("start")
def serve_start(config: Path = typer.Argument(..., help="A config of kind 'serve' (configs/serve.yaml)."),
                port: Optional[int] = typer.Option(None, "--port", help="Override serve.port."),
                host: Optional[str] = typer.Option(None, "--host", help="Override serve.host."),
                status_every: float = typer.Option(60.0, "--status-every", min=0.1,
                                                   help="Seconds between status lines (printed only "
                                                        "when there was traffic).")
                ) -> None:
    """Run the gateway in the foreground until Ctrl-C (which stops everything it started)."""
    # lazy: CLI start-up time (FastAPI, uvicorn, httpx)
    from engine.serve.server import serve_forever

    cfg = load(config, "serve")
    spec = cfg.serve.model_copy(update={k: v for k, v in (("port", port), ("host", host)) if v is not None})
    workspace = ws()
    started: list[bool] = []

    def ready(gateway: Any, spec: Any) -> None:
        started.append(True)
        _print_ready(gateway, spec)

    jobs.begin(workspace, "serve", None, ids={"backend": spec.backend, "base_model": spec.base_model,
                                              "host": spec.host, "port": spec.port})
    try:
        with workspace.job_tmp(cfg.tenant) as scratch:
            serve_forever(spec, workspace, registry(workspace), scratch, on_ready=ready,
                          on_status=_print_status, status_every_s=status_every)
        jobs.done()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM is how a foreground gateway stops: audited as a stop
        jobs.done(ids={"stopped_by": "SIGTERM" if jobs.terminated() else "interrupt"})
        raise
    finally:  # Ctrl-C: uvicorn has shut the app (and so the backend) down, then re-raises
        if started:
            err.print("[yellow]gateway stopped[/]")


def _print_ready(gateway: Any, spec: Any) -> None:
    host, port = spec.host, spec.port
    server_sockets = getattr(gateway, "bound", None)
    if server_sockets:
        host, port = server_sockets
    tenants = sorted({t for t, _ in gateway.routes})
    err.print(f"[green bold]serving[/] http://{host}:{port}/v1  backend {gateway.backend.kind}  "
              f"base {gateway.backend.base_id}  {len(gateway.routes)} adapter(s) for "
              f"{len(tenants)} tenant(s)  reload every {spec.reload_interval_s:g} s  "
              f"[dim](Ctrl-C stops)[/]")


def _print_status(status: dict[str, Any]) -> None:
    """Once a minute while there is traffic: counts only."""
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] [bold]status[/] +{status['new_requests']} requests "
              f"(+{status['new_errors']} errors), +{status['new_completion_tokens']:,} completion "
              f"tokens; {status['in_flight']} in flight; {status['adapters']} adapter(s); "
              f"{status['requests']:,} requests since start")


@serve_app.command("promote")
def serve_promote(run_id: str = typer.Argument(..., help="A finished run with a LoRA adapter."),
                  name: str = typer.Option(..., "--name", "-n", help="The model name the tenant calls."),
                  force: bool = typer.Option(False, "--force",
                                             help="Serve it without a passing Eval & Diff gate (recorded)."),
                  as_json: bool = JsonOpt) -> None:
    """Serve a run's adapter to its tenant, only if its Eval & Diff gate passed (or --force)."""
    # lazy: CLI start-up time
    from engine.serve.promote import adapter_dir, promote

    workspace = ws()
    reg = registry(workspace)
    run = reg.get_run(run_id)
    jobs.begin(workspace, "serve.promote", run["tenant"] if run else None,
               ids={"run_id": run_id, "name": name, "force": force})
    row = promote(workspace, reg, run_id, name, force=force)
    jobs.done(ids={"gate": row["gate"], "forced": bool(row["forced"])},
              hashes={"adapter": jobs.file_sha256(adapter_dir(workspace, row["tenant"], row["adapter_path"])
                                                 / "adapter_model.safetensors")})
    how = f"gate {row['gate']}" if row["gate"] else "[yellow]FORCED without a passing gate[/]"
    emit(as_json, row, f"promoted [bold]{row['run_id']}[/] as [bold]{row['tenant']}/{row['name']}[/] "
                       f"({how}); running gateways pick it up within serve.reload_interval_s")


@serve_app.command("demote")
def serve_demote(name: str = typer.Argument(..., help="Served model name."), tenant: str = TenantOpt,
                 as_json: bool = JsonOpt) -> None:
    """Stop serving a promoted model (running gateways unload it on their next re-read)."""
    # lazy: CLI start-up time
    from engine.serve.promote import demote

    workspace = ws()
    jobs.begin(workspace, "serve.demote", tenant, ids={"name": name})
    row = demote(workspace, tenant, name)
    jobs.done(ids={"run_id": row["run_id"]})
    emit(as_json, row, f"demoted [bold]{row['tenant']}/{row['name']}[/] (run {row['run_id']})")


@serve_app.command("list")
def serve_list(tenant: Optional[str] = OptionalTenantOpt,
               all_rows: bool = typer.Option(False, "--all", help="Include demoted models."),
               as_json: bool = JsonOpt) -> None:
    """Promoted models."""
    # lazy: CLI start-up time
    from engine.serve.promote import ServedModels

    rows = ServedModels(ws().registry_path).list(tenant, active_only=not all_rows)
    emit(as_json, rows, lambda: out.print(table(
        ["tenant", "name", "run", "base model", "promoted", "demoted", "forced"],
        [[r["tenant"], r["name"], r["run_id"], r["base_model"], r["promoted_at"],
          r["demoted_at"] or "", "yes" if r["forced"] else ""] for r in rows])))


# ------------------------------------------------------------------------------------ keys
@keys_app.command("create")
def keys_create(tenant: str = typer.Option(..., "--tenant", "-t", help="Tenant the key belongs to."),
                name: str = typer.Option("default", "--name", "-n", help="A label for the key."),
                admin: bool = typer.Option(False, "--admin", help="An admin key (manages keys/adapters)."),
                as_json: bool = JsonOpt) -> None:
    """Create a key; the token is printed once (only its hash is stored)."""
    # lazy: CLI start-up time
    from engine.serve.keys import KeyStore

    workspace = ws()
    jobs.begin(workspace, "keys.create", tenant, ids={"role": "admin" if admin else "tenant"})
    token, info = KeyStore(workspace.registry_path).create(tenant, name, "admin" if admin else "tenant")
    jobs.done(ids={"key_id": info.key_id})
    if as_json:
        print(json.dumps({"key": token, "key_id": info.key_id, "tenant": info.tenant, "role": info.role}))
        return
    err.print(f"key [bold]{info.key_id}[/] for tenant {info.tenant} ({info.role}); "
              "shown once, store it now:")
    print(token)


@keys_app.command("list")
def keys_list(tenant: Optional[str] = OptionalTenantOpt,
              revoked: bool = typer.Option(False, "--revoked", help="Include revoked keys."),
              as_json: bool = JsonOpt) -> None:
    """List keys (ids, never secrets)."""
    # lazy: CLI start-up time
    from engine.serve.keys import KeyStore

    rows = KeyStore(ws().registry_path).list(tenant, include_revoked=revoked)
    emit(as_json, [r.__dict__ for r in rows], lambda: out.print(table(
        ["key id", "tenant", "name", "role", "created", "revoked"],
        [[r.key_id, r.tenant, r.name, r.role, r.created_at, r.revoked_at or ""] for r in rows])))


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key id (8 hex characters)."),
                as_json: bool = JsonOpt) -> None:
    """Revoke a key (takes effect on the next request)."""
    # lazy: CLI start-up time
    from engine.serve.keys import KeyStore

    workspace = ws()
    jobs.begin(workspace, "keys.revoke", None, ids={"key_id": key_id})
    info = KeyStore(workspace.registry_path).revoke(key_id)
    jobs.done(ids={"tenant": info.tenant})
    emit(as_json, {"key_id": info.key_id, "tenant": info.tenant, "revoked": True},
         f"revoked key [bold]{info.key_id}[/] of tenant {info.tenant}")


# ----------------------------------------------------------------------------------- bench
@bench_app.command("serve")
def bench_serve(
    url: Optional[str] = typer.Option(None, "--url", help="A running gateway (…/v1); default: start "
                                      "a transformers gateway on a tiny model here."),
    key: Optional[str] = typer.Option(None, "--key", envvar="STUDIO_API_KEY", help="API key for --url."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to call on --url."),
    lora_model: Optional[str] = typer.Option(None, "--lora-model", help="Also measure this (LoRA) model."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", min=1),
    requests: int = typer.Option(32, "--requests", "-n", min=1),
    prompt_words: int = typer.Option(32, "--prompt-words", min=1),
    max_tokens: int = typer.Option(32, "--max-tokens", min=1),
    direct: bool = typer.Option(True, "--direct/--no-direct",
                                help="Also drive the backend without the gateway (self-started only)."),
    model_dir: Optional[Path] = typer.Option(None, "--model-dir",
                                             help="Self-start with this HF model directory, not a tiny model."),
    threads: int = typer.Option(1, "--threads", min=0, help="Torch CPU threads when self-started (0: default)."),
    backend: str = typer.Option("transformers", "--backend",
                                help="Self-started backend: transformers or vllm (needs --model-dir "
                                     "with head size >= 32 on CPU, e.g. SmolLM2)."),
) -> None:
    """Load-test a gateway: TTFT, inter-token latency, tokens/s, percentiles, errors; ends with JSON."""
    if backend not in ("transformers", "vllm"):
        raise StudioError(f"--backend must be transformers or vllm, got {backend!r}")
    with tempfile.TemporaryDirectory(prefix="studio-bench-caches-") as caches:
        confine_caches(caches)  # no library cache in $HOME; removed at the end
        # lazy: CLI start-up time; and the libraries it loads read the cache variables set above
        from engine.serve.bench import BenchOptions, run_bench

        opts = BenchOptions(concurrency=concurrency, requests=requests, prompt_words=prompt_words,
                            max_tokens=max_tokens, direct=direct)
        report = run_bench(opts, url=url, key=key, model=model, lora_model=lora_model,
                           model_dir=model_dir, threads=threads or None, backend=backend)
    print(json.dumps(report, sort_keys=True))
