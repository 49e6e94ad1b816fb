"""Workspace paths and permissions: the only place customer data lives (see docs/concepts.md).

Layout: <root>/ (mode 0700), <root>/registry.sqlite (0600), <root>/models/<name>/ (shared,
read-only base models) and <root>/tenants/<tenant>/{raw,datasets,runs,evals,tmp}/ with mode 0700.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import StudioError
from engine.offline import CACHE_ENV_SUBDIRS, confine_caches

DEFAULT_WORKSPACE = "studio-workspace"
DEFAULT_TENANT = "default"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TENANT_SUBDIRS = ("raw", "datasets", "runs", "evals", "tmp")


def check_name(value: str, what: str) -> str:
    """Names become directory names: lower-case letters, digits, '.', '_' and '-' only."""
    if not _NAME_RE.fullmatch(value or "") or ".." in value:
        raise StudioError(
            f"invalid {what} name {value!r}",
            hint="use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return value


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_id(value: str, what: str) -> str:
    """Run/eval ids become directory names too: no separators, no '..', no leading dot."""
    if not _ID_RE.fullmatch(value or "") or ".." in value:
        raise StudioError(f"invalid {what} id {value!r}",
                          hint="ids are letters, digits, '.', '_' and '-' (as printed by studio)")
    return value


class Workspace:
    """Paths inside one workspace directory. Creating a Workspace creates nothing on disk."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    @classmethod
    def resolve(cls, path: str | Path | None = None) -> "Workspace":
        """--workspace beats $STUDIO_WORKSPACE beats ./studio-workspace."""
        return cls(path or os.environ.get("STUDIO_WORKSPACE") or DEFAULT_WORKSPACE)

    def ensure(self) -> "Workspace":
        """Create the workspace if needed and (re)tighten its root to mode 0700: a root made
        earlier, by hand or by an older version, is no longer left readable to others."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if stat.S_IMODE(self.root.stat().st_mode) != 0o700:
            try:
                os.chmod(self.root, 0o700)
            except PermissionError:
                raise StudioError("cannot restrict the workspace to its owner (mode 0700)",
                                  where=str(self.root),
                                  hint="run as the account that owns the workspace") from None
        (self.root / "models").mkdir(exist_ok=True, mode=0o755)
        return self

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def model_dir(self, name: str) -> Path:
        return self.models_dir / check_name(name, "model")

    def tenant_dir(self, tenant: str, create: bool = True) -> Path:
        path = self.root / "tenants" / check_name(tenant, "tenant")
        if create:
            self.ensure()
            (self.root / "tenants").mkdir(exist_ok=True, mode=0o700)
            path.mkdir(exist_ok=True, mode=0o700)
            os.chmod(path, 0o700)
            for sub in TENANT_SUBDIRS:
                (path / sub).mkdir(exist_ok=True, mode=0o700)
        return path

    def dataset_dir(self, tenant: str, name: str, version: int) -> Path:
        return self.tenant_dir(tenant) / "datasets" / check_name(name, "dataset") / f"v{version}"

    def run_dir(self, tenant: str, run_id: str) -> Path:
        return self.tenant_dir(tenant) / "runs" / check_id(run_id, "run")

    def eval_dir(self, tenant: str, eval_id: str) -> Path:
        return self.tenant_dir(tenant) / "evals" / check_id(eval_id, "eval")

    def tmp_dir(self, tenant: str) -> Path:
        return self.tenant_dir(tenant) / "tmp"

    def sweep_scratch(self, tenant: str, min_age_s: float = 10.0) -> list[str]:
        """Remove the scratch directories of jobs that are no longer running (killed with SIGKILL,
        or by a power cut): a live job holds an flock on `job-….lock` next to its directory.
        Entries younger than `min_age_s` are left alone (a job that is just starting)."""
        tmp = self.tmp_dir(tenant)
        removed: list[str] = []
        now = time.time()
        for entry in sorted(tmp.iterdir()):
            if not entry.name.startswith("job-") or entry.name.endswith(".lock"):
                continue
            try:
                if now - entry.lstat().st_mtime < min_age_s:
                    continue
            except OSError:
                continue
            lock = tmp / f"{entry.name}.lock"
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                fd = None  # no lock: a job of an older version, or its lock already gone
            try:
                if fd is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live job
                shutil.rmtree(entry, ignore_errors=True)
                if fd is not None:
                    lock.unlink(missing_ok=True)
                removed.append(entry.name)
            finally:
                if fd is not None:
                    os.close(fd)
        for lock in tmp.glob("job-*.lock"):  # a lock whose directory is gone
            if not (tmp / lock.name[: -len(".lock")]).exists() and now - lock.stat().st_mtime > min_age_s:
                fd = os.open(lock, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    lock.unlink(missing_ok=True)
                except BlockingIOError:
                    pass
                finally:
                    os.close(fd)
        return removed

    @contextmanager
    def job_tmp(self, tenant: str) -> Iterator[Path]:
        """A per-job scratch directory that receives every library cache; removed at the end (and
        by the next job's sweep if this process is killed)."""
        self.sweep_scratch(tenant)
        name = f"job-{uuid.uuid4().hex[:12]}"
        lock = self.tmp_dir(tenant) / f"{name}.lock"
        lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # held while the job runs; released by the kernel at exit
        path = self.tmp_dir(tenant) / name
        saved = {var: os.environ.get(var) for var in CACHE_ENV_SUBDIRS}
        saved_tempdir = tempfile.tempdir
        confine_caches(path)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            lock.unlink(missing_ok=True)
            os.close(lock_fd)
            # back to the caller's confinement: a later job (or test) in this process must not
            # inherit a temp dir that no longer exists
            for var, value in saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
            tempfile.tempdir = saved_tempdir
