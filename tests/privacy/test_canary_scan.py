"""The retention scanner (engine/privacy/canary.py) on sparse files: holes are not read, and a
canary right next to a hole — also its UTF-16 forms, which begin or end with a zero byte — is
still found, at the right offset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.privacy.canary import encodings, scan

CANARY = "cnry0123456789abcdef"
BLOCK = 4096


def _sparse(path: Path, size: int, writes: dict[int, bytes]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)


def _supports_holes(path: Path) -> bool:
    _sparse(path, 64 * BLOCK, {})
    try:
        return os.stat(path).st_blocks == 0 and os.lseek(os.open(path, os.O_RDONLY), 0, os.SEEK_HOLE) == 0
    finally:
        path.unlink()


@pytest.mark.parametrize("form", ["utf-8", "utf-16-le", "utf-16-be"])
def test_canaries_at_the_edges_of_holes_are_found_and_holes_are_not_read(tmp_path: Path,
                                                                          form: str) -> None:
    if not _supports_holes(tmp_path / "probe"):
        pytest.skip("this file system does not report holes")
    pat = encodings(CANARY)[form]
    size = 4096 * BLOCK  # 16 MiB, nearly all holes
    at_end = 10 * BLOCK - len(pat)           # ends where a hole begins
    at_start = 20 * BLOCK                    # begins where a hole ends
    # UTF-16-LE ends with a zero byte: leave that byte to the hole
    into_hole = 30 * BLOCK - len(pat) + 1 if form == "utf-16-le" else 30 * BLOCK - len(pat)
    into_hole_bytes = pat[:-1] if form == "utf-16-le" else pat
    # UTF-16-BE begins with a zero byte: take it from the hole
    from_hole = 40 * BLOCK - 1 if form == "utf-16-be" else 40 * BLOCK
    from_hole_bytes = pat[1:] if form == "utf-16-be" else pat
    _sparse(tmp_path / "shm", size, {at_end: pat, at_start: pat, into_hole: into_hole_bytes,
                                     40 * BLOCK: from_hole_bytes})
    report = scan(CANARY, [tmp_path])
    found = sorted(h.offset for h in report.hits if h.encoding == form)
    assert found == sorted({at_end, at_start, into_hole, from_hole})
    assert report.bytes <= 8 * BLOCK  # four data blocks read (at most two per write), not 16 MiB


def test_a_dense_file_is_read_whole(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20)) + CANARY.encode() + os.urandom(100)
    (tmp_path / "dense").write_bytes(data)
    report = scan(CANARY, [tmp_path])
    assert [h.offset for h in report.hits if h.encoding == "utf-8"] == [3 * (1 << 20)]
    assert report.bytes == len(data)
