"""Routes: which backend id answers a tenant's model name — the injective internal adapter id, the cache salt.

A tenant calls a model by its name (`support-bot`); the backend serves adapters under internal ids.
Tenant and model names are `[a-z0-9][a-z0-9._-]*` (engine/workspace.py `check_name`), so they may
contain `--` and `.`: joining them with a separator that names can contain is not injective
(`acme` + `x--support` and `acme--x` + `support` would both be `acme--x--support`). The internal
id is therefore built from an escaped form of each name:

    internal_id(tenant, name) = "_" + esc(tenant) + "__" + esc(name)
    esc(s) = s with "_" written "_u" and "." written "_d"

In `esc(s)` every `_` is followed by `u` or `d`, so `__` never occurs inside it: the first `__`
after the leading `_` separates the two parts, `parse_internal_id` inverts the scheme, and two
different (tenant, name) pairs never share an id. The id contains no `.` (PEFT's module dicts
refuse dotted adapter names), and its leading `_` is not allowed at the start of a model store
name, so an adapter id never equals a base model's id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from engine.errors import StudioError
from engine.workspace import check_name

_PREFIX = "_"
_SEP = "__"


def _escape(value: str) -> str:
    return value.replace("_", "_u").replace(".", "_d")


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "_":
            if value[i + 1:i + 2] not in ("u", "d"):
                raise ValueError(f"not an escaped name: {value!r}")
            out.append("_" if value[i + 1] == "u" else ".")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def internal_id(tenant: str, name: str) -> str:
    """The backend id of `tenant`'s model `name`; a StudioError for names check_name refuses."""
    check_name(tenant, "tenant")
    check_name(name, "model")
    return f"{_PREFIX}{_escape(tenant)}{_SEP}{_escape(name)}"


def parse_internal_id(value: str) -> tuple[str, str]:
    """(tenant, name) of an internal id; ValueError for anything `internal_id` cannot produce."""
    if not value.startswith(_PREFIX) or _SEP not in value[len(_PREFIX):]:
        raise ValueError(f"not an internal adapter id: {value!r}")
    tenant, name = value[len(_PREFIX):].split(_SEP, 1)
    pair = (_unescape(tenant), _unescape(name))
    try:
        if internal_id(*pair) != value:
            raise ValueError(f"not an internal adapter id: {value!r}")
    except StudioError:
        raise ValueError(f"not an internal adapter id: {value!r}") from None
    return pair


def cache_salt(tenant: str) -> str:
    """Per-tenant prefix-cache isolation (vLLM `cache_salt`): a hash, never the tenant name."""
    return hashlib.sha256(f"studio-cache-salt:{tenant}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Route:
    """A model a tenant may call."""

    tenant: str
    name: str
    internal_id: str
    adapter_path: Path
    source: str  # "promoted" (served_models) or "admin" (POST /admin/adapters)
    run_id: str | None = None
