"""Unix sockets of datatrove's local executor in a short temp dir when the job's is too long.

Only engine/data/refine_datatrove.py imports this module.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import multiprocess  # datatrove's multiprocessing

SOCKET_PATH_MAX = 107  # bytes of a unix socket's path (sun_path less its NUL)
SOCKET_NAME_ROOM = 48  # what multiprocess adds under its temp dir: /pymp-…/listener-…
_short_ipc_dir: list[str] = []


@contextmanager
def ipc_tempdir() -> Iterator[None]:
    """The local executor's Manager and forkserver bind unix sockets in multiprocess's temp dir,
    and a socket path has at most 107 bytes: the job's temp dir, deep inside a workspace, is often
    longer (bind fails and the executor dies with an EOFError). Then, for the run, multiprocess
    gets a private directory (0700) in the system's temp dir instead. It only ever holds socket
    files, never data, and is removed when this process exits."""
    if len(tempfile.gettempdir()) + SOCKET_NAME_ROOM <= SOCKET_PATH_MAX:
        yield
        return
    if not _short_ipc_dir:
        saved_env = {k: os.environ.pop(k) for k in ("TMPDIR", "TEMP", "TMP") if k in os.environ}
        saved, tempfile.tempdir = tempfile.tempdir, None
        try:
            base = tempfile.gettempdir()  # the system's, without the job's confinement
        finally:
            tempfile.tempdir = saved
            os.environ.update(saved_env)
        _short_ipc_dir.append(tempfile.mkdtemp(prefix="studio-ipc-", dir=base))
        atexit.register(shutil.rmtree, _short_ipc_dir[0], True)
    config = multiprocess.current_process()._config
    before = config.get("tempdir")
    config["tempdir"] = _short_ipc_dir[0]
    try:
        yield
    finally:
        if before is None:
            config.pop("tempdir", None)
        else:
            config["tempdir"] = before
