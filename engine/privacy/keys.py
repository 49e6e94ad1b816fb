"""Key material kept OUTSIDE the workspace: the Ed25519 signing key (deletion certificates and the
audit log's head; its public half is the workspace's audit public key) and per-tenant
256-bit data keys (key file, environment variable, or an external KMS hook), plus the workspace id.

Config dir: $STUDIO_CONFIG_DIR, else $XDG_CONFIG_HOME/expert-studio, else ~/.config/expert-studio
(the user's values from before a job confined XDG_CONFIG_HOME into its scratch directory).
Key files are created with mode 0600 in directories of mode 0700. Nothing here logs a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine import offline
from engine.errors import StudioError
from engine.workspace import Workspace, check_name

KEY_BYTES = 32
_HEX = re.compile(r"[0-9a-fA-F]{64}")


def config_dir() -> Path:
    explicit = os.environ.get("STUDIO_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = offline.user_env("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path(offline.user_env("HOME") or Path.home()) / ".config"
    return base / "expert-studio"


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if another process created it first: never overwrite a key
    except FileExistsError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def workspace_id(ws: Workspace, create: bool = True) -> str:
    """A random id for the workspace, stored in <workspace>/workspace-id (not secret)."""
    path = Path(ws.root) / "workspace-id"
    if not path.exists():
        if not create:
            raise StudioError("this workspace has no workspace-id yet", where=str(ws.root))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".workspace-id.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(f"ws-{uuid.uuid4().hex}\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path.read_text().strip()


# ------------------------------------------------------------------------------------ signing key
def signing_key_path() -> Path:
    explicit = os.environ.get("STUDIO_SIGNING_KEY")
    return Path(explicit).expanduser() if explicit else config_dir() / "signing-key.pem"


def _check_outside(path: Path, ws: Workspace | None, what: str) -> None:
    if ws is not None:
        root = Path(ws.root).resolve()
        p = path.expanduser().resolve()
        if p == root or root in p.parents:
            raise StudioError(f"the {what} must live outside the workspace", where=str(path),
                              hint="point STUDIO_CONFIG_DIR / STUDIO_SIGNING_KEY elsewhere; a key "
                                   "stored with the data it protects protects nothing")


def signing_key(ws: Workspace | None = None, create: bool = True) -> Ed25519PrivateKey:
    """The Ed25519 private key (PEM, PKCS8), created 0600 on first use."""
    path = signing_key_path()
    _check_outside(path, ws, "signing key")
    if not path.exists():
        if not create:
            raise StudioError("no signing key yet", where=str(path),
                              hint="it is created by the first audited command (or `studio audit public-key`)")
        key = Ed25519PrivateKey.generate()
        _write_secret(path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise StudioError("the signing key is not an Ed25519 key", where=str(path))
    return loaded


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """A short name for a key pair: "ed25519:" + the first 16 hex digits of sha256(raw public key)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def audit_public_key(ws: Workspace | None = None, pem: str | None = None
                     ) -> tuple[Ed25519PublicKey, str]:
    """The key that audit heads and deletion certificates must be signed by, and where it came
    from: `pem` when given, else the public half of this installation's signing key. Never the key
    a certificate or head carries itself; StudioError when there is none."""
    if pem is not None:
        return load_public_pem(pem), "the given public key"
    path = signing_key_path()
    if not path.exists():
        raise StudioError("this workspace has no audit key to verify against", where=str(path),
                          hint="pass the signer's public key with --public-key (the output of "
                               "`studio audit public-key` where the workspace is run)")
    return signing_key(ws, create=False).public_key(), f"the workspace's audit key ({path})"


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def load_public_pem(text: str | bytes) -> Ed25519PublicKey:
    data = text.encode("ascii") if isinstance(text, str) else text
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise StudioError("not a PEM public key", hint="export one with "
                                                       "`studio audit public-key`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise StudioError("the public key is not an Ed25519 key")
    return key


# --------------------------------------------------------------------------------- tenant data keys
def _decode_key(raw: str, where: str) -> bytes:
    raw = raw.strip()
    if _HEX.fullmatch(raw):
        return bytes.fromhex(raw)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise StudioError("not a 32-byte key (base64 or 64 hex digits)", where=where)
    return key


def tenant_key_env(tenant: str) -> str:
    return "STUDIO_TENANT_KEY_" + re.sub(r"[^A-Z0-9]", "_", tenant.upper())


def tenant_key_path(ws: Workspace, tenant: str) -> Path:
    return config_dir() / "keys" / workspace_id(ws) / f"{check_name(tenant, 'tenant')}.key"


def _kms_hook() -> Callable[..., bytes] | None:
    spec = os.environ.get("STUDIO_KMS_HOOK", "").strip()
    if not spec:
        return None
    module, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise StudioError(f"STUDIO_KMS_HOOK {spec!r} cannot be imported",
                          hint="give module.path:function, importable by this Python") from None
    return fn


def tenant_key(ws: Workspace, tenant: str, *, create: bool = False) -> bytes:
    """The tenant's data key: KMS hook, then $STUDIO_TENANT_KEY_<TENANT>, then the key file."""
    check_name(tenant, "tenant")
    hook = _kms_hook()
    if hook is not None:
        key = hook(workspace_id=workspace_id(ws), tenant=tenant)
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise StudioError("the KMS hook must return 32 bytes", where="STUDIO_KMS_HOOK")
        return key
    env = tenant_key_env(tenant)
    if os.environ.get(env):
        return _decode_key(os.environ[env], env)
    path = tenant_key_path(ws, tenant)
    _check_outside(path, ws, "tenant key")
    if not path.exists():
        if not create:
            raise StudioError(f"no encryption key for tenant {tenant!r}", where=str(path),
                              hint=f"`studio privacy enable --tenant {tenant}` creates one; if it "
                                   "was destroyed, the sealed data is unrecoverable")
        _write_secret(path, base64.b64encode(os.urandom(KEY_BYTES)) + b"\n")
    return _decode_key(path.read_text(), str(path))


def destroy_tenant_key(ws: Workspace, tenant: str) -> Path | None:
    """Crypto-shred: remove the tenant's key file (overwritten first). None when there was none."""
    path = tenant_key_path(ws, tenant)
    if not path.exists():
        return None
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
    return path
