"""Private Space verbs: `studio audit …`, `studio purge`, `studio privacy enable|seal|open`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from engine.cli.context import JsonOpt, TenantOpt, emit, table, ws
from engine.console import err, out
from engine.errors import StudioError
from engine.privacy import audit, jobs
from engine.workspace import check_name

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log, certificates, "
                                                   "retention scans.")
privacy_app = typer.Typer(no_args_is_help=True, help="Encryption at rest (per-tenant keys).")


# ------------------------------------------------------------------------------------------ audit
def _pem_option(public_key: Optional[str]) -> Optional[str]:
    """--public-key: PEM text, or a file holding it."""
    if not public_key:
        return None
    if public_key.lstrip().startswith("-----BEGIN"):
        return public_key
    try:
        return Path(public_key).read_text()
    except OSError:
        raise StudioError("cannot read the public key file", where=public_key) from None


@audit_app.command("verify")
def audit_verify(expected_head: Optional[str] = typer.Option(
        None, "--expected-head", help="A head hash recorded elsewhere (detects a rewritten log)."),
        public_key: Optional[str] = typer.Option(
            None, "--public-key", help="Check the signed head against this key (a PEM file or "
                                       "PEM text) instead of the workspace's audit key."),
        as_json: bool = JsonOpt) -> None:
    """Check the hash chain and the signed head of the audit log: exit 0 when intact or only
    interrupted (repaired by the next audited command, nothing lost), 2 on tampering."""
    res = audit.verify(ws(), expected_head=expected_head, public_key_pem=_pem_option(public_key))
    if as_json:
        print(json.dumps(res.as_dict(), sort_keys=True))
    if not res.ok and not res.recoverable:
        where = f"seq {res.bad_seq}" if res.bad_seq is not None else "log"
        line = f" (line {res.line})" if res.line else ""
        raise StudioError(f"audit log verification failed at {where}{line}: {res.reason}",
                          where="audit/audit.jsonl",
                          hint="the log or its head was modified outside Expert Studio; keep the "
                               "original and investigate")
    if not as_json:
        for note in res.notes:
            out.print(f"[yellow]note[/] {note}")
        if res.recoverable:
            out.print(f"[yellow]interrupted append[/] {res.entries} complete entries, head "
                      f"{res.head}: {res.reason}")
        else:
            out.print(f"[green]ok[/] {res.entries} entries, head {res.head}, signed head checked "
                      f"with key {res.key}")


@audit_app.command("log")
def audit_log(tenant: Optional[str] = typer.Option(None, "--tenant", "-t"),
              as_json: bool = typer.Option(False, "--json", help="One JSON entry per line.")) -> None:
    """Show the audit log (optionally one tenant's entries)."""
    rows = audit.entries(ws(), tenant)
    if as_json:
        for e in rows:
            print(json.dumps(e, sort_keys=True))
        return
    out.print(table(["seq", "time", "actor", "action", "tenant", "ids"],
                    [[e["seq"], e["ts"], e["actor"], e["action"], e["tenant"] or "",
                      ", ".join(f"{k}={v}" for k, v in e["ids"].items())] for e in rows]))


@audit_app.command("head")
def audit_head(as_json: bool = typer.Option(False, "--json", help="Print JSON (the default: this "
                                                                  "verb always prints JSON).")) -> None:
    """Print the last entry's seq and hash (anchor it elsewhere; verify with --expected-head)."""
    print(json.dumps(audit.head(ws()), sort_keys=True))


@audit_app.command("verify-certificate")
def audit_verify_certificate(
        file: Path = typer.Argument(..., help="A certificate JSON from <workspace>/certificates/."),
        public_key: Optional[str] = typer.Option(
            None, "--public-key", help="The key it must be signed by: a PEM file (or PEM text); "
                                       "default: the workspace's audit key."),
        as_json: bool = JsonOpt) -> None:
    """Verify a deletion certificate's structure and Ed25519 signature against a key you trust
    (never the key the certificate carries)."""
    # lazy: CLI start-up time
    from engine.privacy.keys import audit_public_key, fingerprint, public_pem
    from engine.privacy.purge import verify_certificate

    workspace = ws()
    key, source = audit_public_key(workspace, _pem_option(public_key))
    cert = verify_certificate(file, public_pem(key))
    d = cert["deleted"]
    emit(as_json, {"valid": True, "certificate": cert, "key": fingerprint(key), "key_source": source},
         [f"[green]valid[/] {cert['certificate_id']}: tenant {cert['tenant']}, "
          f"{d['file_count']} file(s), {d['bytes']} bytes, {cert['when']} by {cert['by']}",
          f"signed by key {fingerprint(key)} ({source})"])


@audit_app.command("public-key")
def audit_public_key(as_json: bool = JsonOpt) -> None:
    """Print the certificate-signing public key (PEM); the key pair is created on first use."""
    # lazy: CLI start-up time
    from engine.privacy.keys import public_pem, signing_key

    pem = public_pem(signing_key(ws()))
    if as_json:
        print(json.dumps({"public_key_pem": pem}))
    else:
        print(pem, end="")


@audit_app.command("retention")
def audit_retention(
        canary: str = typer.Option(..., "--canary", help="A unique string planted in the data."),
        allow: list[Path] = typer.Option([], "--allow", help="A path (file or folder) where hits are expected."),
        path: list[Path] = typer.Option([], "--path", help="Scan this folder too."),
        no_defaults: bool = typer.Option(False, "--no-default-roots",
                                         help="Scan only the --path folders."),
        as_json: bool = JsonOpt) -> None:
    """Scan home, temp dirs, caches, logs and the workspace for copies of a canary string."""
    # lazy: CLI start-up time
    from engine.privacy.canary import default_roots, scan

    workspace = ws()
    roots = ([] if no_defaults else default_roots(workspace)) + list(path)
    report = scan(canary, roots, allow=list(allow))
    if as_json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        for hit in report.hits:
            flag = "allowed" if hit.allowed else "[red]STRAY[/]"
            out.print(f"{flag} {hit.path} @ {hit.offset} ({hit.encoding})")
        out.print(f"scanned {report.files} file(s), {report.bytes} bytes; {len(report.hits)} hit(s), "
                  f"{len(report.stray)} outside the allowed paths; skipped {len(report.skipped)}")
    if report.stray:
        raise StudioError(f"canary found in {len(report.stray)} place(s) outside the allowed paths")


# ------------------------------------------------------------------------------------------ purge
def purge_cmd(
        tenant: str = TenantOpt,
        run: Optional[str] = typer.Option(None, "--run", help="A run id."),
        dataset: Optional[str] = typer.Option(None, "--dataset", help="NAME or NAME:vN."),
        eval_id: Optional[str] = typer.Option(None, "--eval", help="An eval id."),
        everything: bool = typer.Option(False, "--all", help="Everything of the tenant, incl. its key."),
        expired: bool = typer.Option(False, "--expired", help="What the retention policy expired."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
        as_json: bool = JsonOpt,
) -> None:
    """Delete tenant data and write a signed deletion certificate (certificates/<id>.json)."""
    # lazy: CLI start-up time
    from engine.privacy.purge import inventory, purge, select

    workspace = ws()
    if expired:
        if any((run, dataset, eval_id, everything)):
            raise StudioError("--expired cannot be combined with another selection")
        # lazy: CLI start-up time (the retention policy is a pydantic model)
        from engine.privacy.retention import expire

        certs = expire(workspace, tenant)
        emit(as_json, {"certificates": [str(c) for c in certs]},
             [*(f"deleted per retention policy: certificate {c}" for c in certs),
              f"{len(certs)} expired item(s) purged"])
        return
    target = select(workspace, tenant, run=run, dataset=dataset, eval_id=eval_id, everything=everything)
    files = inventory(workspace, target.paths)
    what = ", ".join(f"{k}={v}" for k, v in target.ids.items())
    if not yes and not sys.stdin.isatty():
        raise StudioError("purge asks for confirmation, but there is no terminal",
                          hint="pass --yes to purge non-interactively")
    if not yes and not typer.confirm(f"permanently delete {len(files)} file(s) of tenant "
                                     f"{tenant} ({what})?", err=True):
        raise StudioError("purge cancelled", hint="pass --yes to purge without a question")
    jobs.begin(workspace, "purge.request", tenant, ids=target.ids, open_data=False)  # sealed stays sealed
    cert, path = purge(workspace, tenant, target)
    jobs.done()
    emit(as_json, {"certificate": cert, "path": str(path)},
         [f"purged {cert['deleted']['file_count']} file(s) ({cert['deleted']['bytes']} bytes) "
          f"of tenant {tenant}", f"certificate: {path}"])


# ---------------------------------------------------------------------------------------- privacy
@privacy_app.command("enable")
def privacy_enable(tenant: str = TenantOpt, as_json: bool = JsonOpt) -> None:
    """Create the tenant's data key (outside the workspace) and seal its data now."""
    # lazy: CLI start-up time (the privacy policy is a pydantic model)
    from engine.privacy.crypto import seal_tree
    from engine.privacy.keys import tenant_key, tenant_key_path
    from engine.privacy.policy import load_policy, policy_path

    workspace = ws()
    key = tenant_key(workspace, tenant, create=True)
    res = seal_tree(key, tenant, workspace.tenant_dir(tenant))
    audit.record(workspace, "privacy.enable", tenant=tenant, ids={"files_sealed": res["files"]})
    emit(as_json, {"tenant": tenant, "key_path": str(tenant_key_path(workspace, tenant)), **res},
         f"tenant {tenant}: key {tenant_key_path(workspace, tenant)}; sealed {res['files']} file(s)")
    if not load_policy(workspace).encrypted(tenant):
        err.print(f"[yellow]add[/] `tenants: {{{tenant}: {{encryption: true}}}}` to "
                  f"{policy_path(workspace)} so every job opens and re-seals the data automatically")


@privacy_app.command("seal")
def privacy_seal(tenant: str = TenantOpt,
                 sub: Optional[str] = typer.Option(None, "--only", help="A subfolder, e.g. raw or runs/<id>."),
                 as_json: bool = JsonOpt) -> None:
    """Seal the tenant's plaintext files in place (AES-256-GCM, *.sealed)."""
    # lazy: CLI start-up time
    from engine.privacy.crypto import seal_tree
    from engine.privacy.keys import tenant_key

    only = _sub(sub)
    workspace = ws()
    res = seal_tree(tenant_key(workspace, tenant), tenant, workspace.tenant_dir(tenant), only)
    audit.record(workspace, "privacy.seal", tenant=tenant, ids={"files": res["files"], "only": sub})
    emit(as_json, {"tenant": tenant, "only": only, **res},
         f"sealed {res['files']} file(s) ({res['bytes']} bytes)")


@privacy_app.command("open")
def privacy_open(tenant: str = TenantOpt,
                 sub: Optional[str] = typer.Option(None, "--only", help="A subfolder."),
                 as_json: bool = JsonOpt) -> None:
    """Decrypt the tenant's sealed files in place."""
    # lazy: CLI start-up time
    from engine.privacy.crypto import open_tree
    from engine.privacy.keys import tenant_key

    only = _sub(sub)
    workspace = ws()
    res = open_tree(tenant_key(workspace, tenant), tenant, workspace.tenant_dir(tenant), only)
    audit.record(workspace, "privacy.open", tenant=tenant, ids={"files": res["files"], "only": sub})
    emit(as_json, {"tenant": tenant, "only": only, **res}, f"opened {res['files']} file(s)")


def _sub(sub: str | None) -> str | None:
    if sub is None:
        return None
    parts = Path(sub).parts
    if not parts or Path(sub).is_absolute():
        raise StudioError(f"--only must be a folder inside the tenant, got {sub!r}")
    for part in parts:
        check_name(part, "folder")
    return Path(*parts).as_posix()
