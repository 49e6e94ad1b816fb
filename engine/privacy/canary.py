"""Retention audit: find every copy of a canary string on disk (home, temp dirs, caches, logs, the
workspace), in plain UTF-8, UTF-16, base64 and JSON-escaped forms, streaming through files.

Limits (documented in docs/privacy.md): compressed or tokenized copies (gzip, Arrow with
compression, token ids, model weights) are not recognised; files over 1 GB, /proc, /sys and
other device trees are skipped; symlinks are not followed.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import offline
from engine.errors import StudioError
from engine.workspace import Workspace

MAX_FILE = 1 << 30
CHUNK = 1 << 20
SKIP_PREFIXES = ("/proc", "/sys", "/dev/pts", "/run/user")


def encodings(canary: str) -> dict[str, bytes]:
    """The byte patterns to look for, by name."""
    raw = canary.encode("utf-8")
    forms: dict[str, bytes] = {"utf-8": raw, "utf-16-le": canary.encode("utf-16-le"),
                               "utf-16-be": canary.encode("utf-16-be")}
    escaped = json.dumps(canary)[1:-1].encode("ascii")
    if escaped != raw:
        forms["json-escaped"] = escaped
    utf8_json = json.dumps(canary, ensure_ascii=False)[1:-1].encode("utf-8")
    if utf8_json not in forms.values():
        forms["json"] = utf8_json
    for k in range(3):  # base64 at each of the three byte alignments: keep the stable middle
        enc = base64.b64encode(b"\0" * k + raw)
        start = 4 if k else 0
        end = ((k + len(raw)) // 3) * 4
        if end - start >= 8:
            forms[f"base64/{k}"] = enc[start:end]
    return forms


@dataclass
class Hit:
    path: str
    offset: int
    encoding: str
    allowed: bool


@dataclass
class Report:
    hits: list[Hit] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def stray(self) -> list[Hit]:
        return [h for h in self.hits if not h.allowed]

    def as_dict(self) -> dict[str, Any]:
        return {"hits": [h.__dict__ for h in self.hits], "stray": len(self.stray),
                "files": self.files, "bytes": self.bytes, "skipped": self.skipped}


def default_roots(ws: Workspace | None = None) -> list[Path]:
    """Home, temp dirs, /dev/shm, XDG caches (HF, torch, triton, vLLM…), log dirs, the workspace."""
    roots: list[str | None] = [offline.user_env("HOME"), offline.user_env("TMPDIR"),
                               tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm",
                               offline.user_env("XDG_CACHE_HOME"), offline.user_env("XDG_STATE_HOME"),
                               offline.user_env("XDG_DATA_HOME"), offline.user_env("HF_HOME"),
                               offline.user_env("TORCH_HOME"), offline.user_env("TRITON_CACHE_DIR"),
                               offline.user_env("VLLM_CACHE_ROOT"), "/var/log"]
    home = offline.user_env("HOME")
    if home:
        roots += [str(Path(home) / ".cache"), str(Path(home) / ".local" / "state")]
    if ws is not None:
        roots.append(str(ws.root))
    out: list[Path] = []
    for r in roots:
        if r and Path(r).exists() and Path(r) not in out:
            out.append(Path(r))
    return out


def _is_allowed(path: Path, allow: list[Path]) -> bool:
    return any(path == a or a in path.parents for a in allow)


def _extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The file's data extents [start, end): holes of a sparse file (a shared-memory segment,
    a preallocated file) hold only zeros and are not read. One extent where the file system
    cannot tell."""
    out: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if end <= start:
                break
            out.append((start, end))
            pos = end
    except (OSError, AttributeError):  # no SEEK_DATA here: read it all
        return [(0, size)] if size else []
    return out


def _scan_file(path: Path, patterns: dict[str, bytes], report: Report, allow: list[Path]) -> None:
    overlap = max(len(p) for p in patterns.values()) - 1
    try:
        f = open(path, "rb")
    except OSError:
        report.skipped.append(f"{path} (unreadable)")
        return
    with f:
        report.files += 1
        size = os.fstat(f.fileno()).st_size
        base, tail = 0, b""
        seen: set[tuple[int, str]] = set()

        def look(chunk: bytes) -> None:
            nonlocal base, tail
            buf = tail + chunk
            start = base - len(tail)
            for name, pat in patterns.items():
                i = buf.find(pat)
                while i != -1:
                    key = (start + i, name)
                    if key not in seen:
                        seen.add(key)
                        report.hits.append(Hit(str(path), start + i, name, _is_allowed(path, allow)))
                    i = buf.find(pat, i + 1)
            base += len(chunk)
            tail = buf[-overlap:] if overlap else b""

        # a hole is zeros: a match may reach `overlap` bytes into it from either side (the
        # UTF-16 forms end in a zero byte), so the zeros next to data are looked at, not read
        for data_start, data_end in [*_extents(f.fileno(), size), (size, size)]:
            hole = data_start - base
            if hole > 0:
                look(bytes(min(hole, overlap)))
                if data_start > base:  # the rest of the hole: only its last zeros can matter
                    tail = bytes(min(hole, overlap))
                    base = data_start
            f.seek(data_start)
            while base < data_end and (chunk := f.read(min(CHUNK, data_end - base))):
                report.bytes += len(chunk)
                look(chunk)


def scan(canary: str, roots: list[Path], allow: list[Path] | None = None) -> Report:
    """Walk `roots` (no symlinks followed, each file once) and report every occurrence."""
    if len(canary) < 8:
        raise StudioError("the canary must be at least 8 characters",
                          hint="use a random string, e.g. CANARY-<32 hex digits>")
    patterns = encodings(canary)
    allowed = [Path(a).expanduser().resolve() for a in allow or []]
    report = Report()
    seen: set[tuple[int, int]] = set()
    for root in roots:
        root = Path(root).resolve()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=lambda e: None):
            if dirpath.startswith(SKIP_PREFIXES):
                dirnames[:] = []
                continue
            for name in filenames:
                p = Path(dirpath) / name
                try:
                    st = p.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                if st.st_size > MAX_FILE:
                    report.skipped.append(f"{p} (over 1 GB)")
                    continue
                _scan_file(p, patterns, report, allowed)
    return report
