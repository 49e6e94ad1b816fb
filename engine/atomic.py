"""Atomic file writes: a temp file next to the target, fsync, rename, fsync of the directory —
never half a file on disk, and the rename itself survives a power cut."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: int = 0o600) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into; it replaces `path` only when the block
    ends without an error (flushed and fsynced first; the directory is fsynced after the rename).
    On an error the temp file is removed and the old `path`, if any, is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the entries of `directory` (a rename, a new or removed file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o600) -> None:
    """`path` gets `text` (UTF-8) atomically."""
    with atomic_write(path, mode) as f:
        f.write(text.encode("utf-8"))
