"""User-facing error types: a StudioError is a user mistake (exit 2, message + hint, no traceback)."""

from __future__ import annotations

import errno
import socket


class StudioError(Exception):
    """A mistake the user can fix. Printed as one message with where it happened and a hint."""

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(what)
        self.what = what
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


# a full disk (or the user's quota): a condition of the machine, not a bug — said in one message
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


class DiskFull(StudioError):
    """The file system filled up (ENOSPC, or EDQUOT) while a command was writing."""

    @classmethod
    def from_os_error(cls, exc: OSError, what: str | None = None, *, where: str | None = None,
                      kept: str | None = None) -> "DiskFull":
        """`what` was being written (to `where`, by default the file the OS error names);
        `kept`: what the caller guarantees about the partial output."""
        kind = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
        where = where or (str(exc.filename) if exc.filename else None)
        hint = "free some space (or raise the quota) and run the command again"
        if kept:
            hint += f"; {kept}"
        return cls(f"{kind} while writing {what or 'a file'}", where=where, hint=hint)


class ConfigError(StudioError):
    """A config file is missing, unparsable or does not validate."""


class DataError(StudioError):
    """Input data cannot be read or has the wrong shape."""


class EgressBlocked(StudioError):
    """A non-loopback network connection was attempted while the egress guard is on."""

    def __init__(self, address: str):
        super().__init__(
            f"network egress blocked: connection to {address} refused by the offline guard",
            hint="Expert Studio never talks to the network; everything it needs must be local.",
        )
        self.address = address


class LookupBlocked(EgressBlocked, socket.gaierror):
    """A name or address lookup (DNS) of a non-loopback host while the egress guard is on; also a
    socket.gaierror, so code that handles a failed lookup (socket.getfqdn) goes on offline."""


class GateFailed(StudioError):
    """A regression gate failed (exit 3, so CI pipelines can tell it from a usage error)."""

    exit_code = 3


class PiiLeak(GateFailed):
    """The refine's PII leak gate failed: the residual scan of the records about to be written
    found more personal data of some type than `pii.max_residual` allows (exit 3, nothing kept).
    `residual` is the per-type summary (counts, maxima, record ids — never the values)."""

    def __init__(self, what: str, *, hint: str | None = None,
                 residual: dict[str, dict[str, object]] | None = None):
        super().__init__(what, hint=hint)
        self.residual = residual or {}


class NotFound(StudioError):
    """Something named by the user (a key id, a served model) does not exist (HTTP 404 at the gateway)."""
