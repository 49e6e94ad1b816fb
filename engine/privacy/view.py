"""Decrypted views of an encrypted tenant: for one job, `tenants/<t>` becomes a symlink to a
plaintext copy in tmpfs; at the end changes are sealed back and the plaintext is wiped.

At rest `tenants/<t>/` holds `*.sealed` files only. `open_view` decrypts them into
`<view root>/<workspace-id>/<t>/view-…/` (default view root /dev/shm/expert-studio-<uid>, or
$STUDIO_VIEW_DIR), renames the sealed folder to `tenants/.store-<t>` and puts a symlink in its
place, so every path the registry recorded keeps working. `close_view` seals new and changed
files into the store, removes sealed copies of files the job deleted, puts the store back and
removes the view. `recover` repairs what a killed job left (called before every open).
Plaintext never touches persistent storage when the view root is a tmpfs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from engine.atomic import atomic_write
from engine.console import err
from engine.privacy import crypto
from engine.privacy.keys import workspace_id
from engine.workspace import Workspace


@dataclass
class View:
    tenant: str
    link: Path
    store: Path
    view: Path
    snapshot: dict[str, tuple[int, int]] = field(default_factory=dict)


def view_root() -> Path:
    explicit = os.environ.get("STUDIO_VIEW_DIR")
    if explicit:
        return Path(explicit)
    if Path("/dev/shm").is_dir():
        return Path("/dev/shm") / f"expert-studio-{os.getuid()}"
    return Path(tempfile.gettempdir()) / f"expert-studio-views-{os.getuid()}"  # warned about


def _fstype(path: Path) -> str | None:
    """File system type of the mount holding `path` (from /proc/mounts), None when unknown."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return None
    best, kind = "", None
    target = str(path.resolve())
    for mnt, fs in mounts:
        mnt = mnt.replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, kind = mnt, fs
    return kind


def memory_backed(path: Path) -> bool:
    return _fstype(path) in ("tmpfs", "ramfs")


def _files(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if rel.parts[0] in crypto.SKIP_DIRS or p.is_symlink() or not p.is_file():
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        st = p.stat()
        out[rel.as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _tenant_base(ws: Workspace, tenant: str) -> Path:
    return view_root() / workspace_id(ws) / tenant


def _seal_into(key: bytes, tenant: str, rel: str, src: Path, store: Path) -> None:
    dst = store / (rel + crypto.SUFFIX)
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_write(dst) as f, open(src, "rb") as s:
        crypto.seal_stream(key, tenant, rel, s, f)


def _sync(key: bytes, v: View, full: bool) -> dict[str, int]:
    """Seal new/changed view files into the store; drop sealed copies of files the job deleted."""
    now = _files(v.view)
    sealed = removed = 0
    for rel, sig in sorted(now.items()):
        if full or v.snapshot.get(rel) != sig:
            _seal_into(key, v.tenant, rel, v.view / rel, v.store)
            sealed += 1
    if not full:
        for rel in sorted(set(v.snapshot) - set(now)):
            (v.store / (rel + crypto.SUFFIX)).unlink(missing_ok=True)
            removed += 1
        # folders the job removed as a whole (a purged run, a dataset version)
        for d in sorted((p for p in v.store.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            rel = d.relative_to(v.store)
            if rel.parts[0] not in crypto.SKIP_DIRS and not (v.view / rel).exists():
                shutil.rmtree(d, ignore_errors=True)
    for sub in ("tmp",):
        (v.store / sub).mkdir(exist_ok=True, mode=0o700)
    return {"sealed": sealed, "removed": removed}


def _wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def recover(ws: Workspace, tenant: str, key: bytes) -> None:
    """Undo what a killed job left behind: seal a surviving view back, restore the store."""
    tenants = Path(ws.root) / "tenants"
    link, store = tenants / tenant, tenants / f".store-{tenant}"
    if link.is_symlink():
        target = Path(os.readlink(link))
        if target.is_dir() and store.is_dir():
            res = _sync(key, View(tenant, link, store, target), full=True)
            err.print(f"[yellow]recovered[/] an interrupted job's view of tenant {tenant}: "
                      f"sealed {res['sealed']} file(s)")
        link.unlink()
    if store.is_dir() and not link.exists():
        os.rename(store, link)
    base = _tenant_base(ws, tenant)
    if base.exists():  # views without a live job (the tenant lock is held by the caller)
        _wipe(base)


def open_view(ws: Workspace, tenant: str, key: bytes) -> View:
    """Decrypt the tenant into a fresh tmpfs view and point `tenants/<tenant>` at it."""
    recover(ws, tenant, key)
    link = ws.tenant_dir(tenant)  # a real folder of sealed files (created empty if new)
    store = link.parent / f".store-{tenant}"
    base = _tenant_base(ws, tenant)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for parent in (view_root(), base.parent, base):
        os.chmod(parent, 0o700)
    if not memory_backed(base):
        err.print(f"[red bold]warning:[/] {base} is not a tmpfs: the decrypted view of tenant "
                  f"{tenant} is written to persistent storage (set STUDIO_VIEW_DIR to a tmpfs)")
    crypto.seal_tree(key, tenant, link)  # plaintext that got there outside a job: seal it first
    view = Path(tempfile.mkdtemp(prefix="view-", dir=base))
    os.chmod(view, 0o700)
    try:
        for sealed in crypto._files(link, sealed=True):
            rel = sealed.relative_to(link).as_posix()[: -len(crypto.SUFFIX)]
            crypto.open_file(key, tenant, link, sealed, view / rel, remove=False)
        for d in (p for p in link.rglob("*") if p.is_dir()):
            (view / d.relative_to(link)).mkdir(parents=True, exist_ok=True, mode=0o700)
        v = View(tenant, link, store, view, _files(view))
        os.rename(link, store)
        os.symlink(view, link)
    except BaseException:
        _wipe(view)
        if store.is_dir() and not link.exists():
            os.rename(store, link)
        raise
    return v


def close_view(v: View, key: bytes) -> dict[str, int]:
    """Seal the job's changes back, restore `tenants/<tenant>`, wipe the plaintext view."""
    res = _sync(key, v, full=False)  # on failure the view stays: the next job's recover() seals it
    if v.link.is_symlink():
        v.link.unlink()
    if v.store.is_dir() and not v.link.exists():
        os.rename(v.store, v.link)
    _wipe(v.view)
    return res
