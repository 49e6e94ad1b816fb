"""Encryption at rest: streaming AES-256-GCM sealing of tenant files bound to tenant + path.

Sealed file (`<name>.sealed`):
    MAGIC (8) | header length (4, big-endian) | header (canonical JSON: format, tenant, path,
    chunk) | nonce prefix (8 random bytes) | chunk 0 | chunk 1 | … (each: ciphertext + 16-byte tag)
Chunk i is encrypted with nonce = prefix ‖ i (4 bytes) and associated data = header ‖ i ‖ final
flag, so chunks cannot be reordered, dropped or appended, the tail cannot be cut, and a file
cannot be passed off as another tenant's or another path's (the header names both and is
authenticated). Memory use is one chunk (1 MiB) whatever the file size.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.atomic import atomic_write
from engine.errors import StudioError

MAGIC = b"STSEAL\x00\x01"
SUFFIX = ".sealed"
CHUNK = 1 << 20
TAG = 16
PREFIX = 8


def header_bytes(tenant: str, relpath: str, chunk: int = CHUNK) -> bytes:
    header = {"format": 1, "tenant": tenant, "path": relpath, "chunk": chunk}
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">IB", index, 1 if final else 0)


def _chunks(src: BinaryIO, size: int) -> Iterator[tuple[bytes, bool]]:
    """(chunk, is_last) pairs; an empty input yields one empty final chunk."""
    current = src.read(size)
    while True:
        following = src.read(size)
        yield current, not following
        if not following:
            return
        current = following


def seal_stream(key: bytes, tenant: str, relpath: str, src: BinaryIO, dst: BinaryIO,
                chunk: int = CHUNK) -> None:
    header = header_bytes(tenant, relpath, chunk)
    prefix = os.urandom(PREFIX)
    aes = AESGCM(key)
    dst.write(MAGIC + struct.pack(">I", len(header)) + header + prefix)
    for i, (data, last) in enumerate(_chunks(src, chunk)):
        dst.write(aes.encrypt(prefix + struct.pack(">I", i), data, _aad(header, i, last)))


def open_stream(key: bytes, tenant: str, relpath: str, src: BinaryIO, dst: BinaryIO) -> None:
    """Decrypt; InvalidTag on a wrong key or any modification, StudioError on a foreign file."""
    if src.read(len(MAGIC)) != MAGIC:
        raise StudioError("not a sealed file", where=relpath)
    (n,) = struct.unpack(">I", src.read(4))
    header = src.read(n)
    try:
        meta = json.loads(header)
    except ValueError:
        raise InvalidTag() from None
    if meta.get("tenant") != tenant or meta.get("path") != relpath:
        raise StudioError("sealed file belongs to another tenant or path", where=relpath,
                          hint="sealed files cannot be moved or swapped")
    chunk = int(meta["chunk"])
    prefix = src.read(PREFIX)
    aes = AESGCM(key)
    for i, (data, last) in enumerate(_chunks(src, chunk + TAG)):
        dst.write(aes.decrypt(prefix + struct.pack(">I", i), data, _aad(header, i, last)))


def seal_file(key: bytes, tenant: str, tenant_root: Path, path: Path, *, remove: bool = True) -> Path:
    """path → path.sealed (atomic, 0600); the plaintext is removed afterwards unless remove=False."""
    rel = path.relative_to(tenant_root).as_posix()
    target = path.with_name(path.name + SUFFIX)
    with atomic_write(target) as f, open(path, "rb") as src:
        seal_stream(key, tenant, rel, src, f)
    if remove:
        path.unlink()
    return target


def open_file(key: bytes, tenant: str, tenant_root: Path, sealed: Path, dest: Path | None = None,
              *, remove: bool = True) -> Path:
    """path.sealed → path (or `dest`); nothing is written when authentication fails."""
    plain = sealed.with_name(sealed.name[: -len(SUFFIX)])
    rel = plain.relative_to(tenant_root).as_posix()
    dest = dest or plain
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_write(dest) as f, open(sealed, "rb") as src:
        open_stream(key, tenant, rel, src, f)
    if remove and dest == plain:
        sealed.unlink()
    return dest


SKIP_DIRS = {"tmp"}  # scratch space is wiped per job, never sealed


def _files(root: Path, sealed: bool) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts and rel.parts[0] in SKIP_DIRS or not p.is_file() or p.is_symlink():
            continue
        if p.name.endswith(SUFFIX) == sealed and not p.name.startswith("."):
            out.append(p)
    return out


def seal_tree(key: bytes, tenant: str, tenant_root: Path, sub: str | None = None) -> dict[str, Any]:
    """Seal every plaintext file under tenant_root (or tenant_root/sub) in place."""
    base = tenant_root / sub if sub else tenant_root
    files = _files(base, sealed=False) if base.exists() else []
    size = sum(p.stat().st_size for p in files)
    for p in files:
        seal_file(key, tenant, tenant_root, p)
    return {"files": len(files), "bytes": size}


def open_tree(key: bytes, tenant: str, tenant_root: Path, sub: str | None = None) -> dict[str, Any]:
    """Open every sealed file under tenant_root (or tenant_root/sub) in place."""
    base = tenant_root / sub if sub else tenant_root
    files = _files(base, sealed=True) if base.exists() else []
    for p in files:
        open_file(key, tenant, tenant_root, p)
    return {"files": len(files)}


def sealed_count(tenant_root: Path) -> int:
    return len(_files(tenant_root, sealed=True)) if tenant_root.exists() else 0
