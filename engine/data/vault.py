"""PII vault: the placeholder → original-values mapping of one dataset version, AES-GCM encrypted.

Written only when `refine.pii.vault: encrypted`. The 32-byte key comes from the environment
variable named by `refine.pii.vault_key_env` (default STUDIO_VAULT_KEY), base64 or hex; make one
with

    python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"

File layout (binary):
    MAGIC (8 bytes) | header length (4 bytes, big-endian) | header | nonce (12 bytes) | ciphertext+tag
The header is canonical JSON naming the format version and the dataset/version ids; it is the
AES-GCM associated data, so it is authenticated but readable without the key. The plaintext is
canonical JSON {"format": 1, "mapping": {placeholder: [original, …]}}.

Errors and logs never contain a key or a mapped value.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.atomic import atomic_write
from engine.config import PiiSpec
from engine.errors import StudioError

log = logging.getLogger(__name__)

VAULT_FORMAT = 1
MAGIC = b"STVAULT\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
_KEY_HINT = ('create a key with: python -c "import os,base64;'
             'print(base64.b64encode(os.urandom(32)).decode())" and export it as {name}=<key>; '
             "keep it somewhere safe: without it the vault cannot be read")
_HEX = re.compile(r"[0-9a-fA-F]{64}")


def load_key(spec: PiiSpec) -> bytes:
    """The 32-byte vault key from the environment variable `spec.vault_key_env` (base64 or hex).

    Call it before any work starts; StudioError naming the variable when it is unset or invalid.
    """
    name = spec.vault_key_env
    where = "refine.pii.vault_key_env"
    raw = os.environ.get(name, "").strip()
    if not raw:
        raise StudioError(f"refine.pii.vault is 'encrypted' but the environment variable {name} "
                          "is not set", where=where, hint=_KEY_HINT.format(name=name))
    key: bytes | None = None
    if _HEX.fullmatch(raw):
        key = bytes.fromhex(raw)
    else:
        for altchars in (None, b"-_"):  # standard or URL-safe alphabet
            try:
                key = base64.b64decode(raw, altchars=altchars, validate=True)
            except (binascii.Error, ValueError):
                key = None
                continue
            if len(key) == KEY_BYTES:
                break
    if key is None or len(key) != KEY_BYTES:
        raise StudioError(f"the environment variable {name} does not hold a 32-byte key "
                          "(base64 or 64 hex digits)", where=where,
                          hint=_KEY_HINT.format(name=name))
    return key


def vault_aad(dataset: str, version: int | str, tenant: str | None = None) -> bytes:
    """The header / associated data binding a vault to one dataset version."""
    header = {"format": VAULT_FORMAT, "kind": "studio-pii-vault", "tenant": tenant,
              "dataset": dataset, "version": version}
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def write_vault(path: str | os.PathLike[str], mapping: dict[str, list[str]], key: bytes,
                aad: bytes) -> Path:
    """Encrypt `mapping` to `path` atomically (temp file + rename), mode 0600."""
    path = Path(path)
    plaintext = json.dumps({"format": VAULT_FORMAT, "mapping": mapping}, sort_keys=True,
                           ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    nonce = os.urandom(NONCE_BYTES)
    blob = (MAGIC + struct.pack(">I", len(aad)) + aad + nonce
            + AESGCM(key).encrypt(nonce, plaintext, aad))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:  # mode 0600
        f.write(blob)
    log.info("wrote PII vault %s (%d placeholders)", path.name, len(mapping))
    return path


def read_vault(path: str | os.PathLike[str], key: bytes, aad: bytes) -> dict[str, list[str]]:
    """Decrypt a vault written by write_vault for the same key and associated data."""
    path = Path(path)
    hint = ("check that the key variable holds the key used when this dataset version was "
            "refined, and that the file is the one written for this version")
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise StudioError("vault file not found", where=str(path)) from None
    head = len(MAGIC) + 4
    if len(blob) < head + NONCE_BYTES + 16 or not blob.startswith(MAGIC):
        raise StudioError("vault cannot be decrypted: not a vault file", where=str(path), hint=hint)
    (n,) = struct.unpack(">I", blob[len(MAGIC):head])
    stored = blob[head:head + n]
    if stored != aad:
        raise StudioError("vault cannot be decrypted: it belongs to another dataset version",
                          where=str(path), hint=hint)
    nonce = blob[head + n:head + n + NONCE_BYTES]
    try:
        plaintext = AESGCM(key).decrypt(nonce, blob[head + n + NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise StudioError("vault cannot be decrypted: wrong key or the file was modified",
                          where=str(path), hint=hint) from None
    data = json.loads(plaintext)
    return data["mapping"]
