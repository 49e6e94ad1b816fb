"""The workspace privacy policy `<workspace>/privacy.yaml`: retention, per-tenant encryption and
the trust_remote_code allow-list (all optional; without the file nothing changes).

    retention:                      # every tenant, unless tenants.<t>.retention overrides
      raw_after_refine: delete      # keep | delete  (inputs stored under tenants/<t>/raw/)
      golden_after_train: delete    # keep | delete  (train/val/rejects/lineage of the trained version)
      adapters_days: 30             # delete weights (adapter, checkpoints, exports) of older runs
      runs_days: 90                 # delete whole runs (and their registry rows)
      evals_days: 90                # delete evals
      datasets_days: 180            # delete dataset versions
    tenants:
      acme: {encryption: true, retention: {runs_days: 7}}
    trust_remote_code: []           # model store names allowed to run their own code
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import ConfigError
from engine.workspace import Workspace

POLICY_FILE = "privacy.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetentionSpec(_Strict):
    raw_after_refine: Literal["keep", "delete"] = "keep"
    golden_after_train: Literal["keep", "delete"] = "keep"
    adapters_days: int | None = Field(default=None, ge=0)
    runs_days: int | None = Field(default=None, ge=0)
    evals_days: int | None = Field(default=None, ge=0)
    datasets_days: int | None = Field(default=None, ge=0)


class TenantPolicy(_Strict):
    encryption: bool = False
    retention: RetentionSpec | None = None


class PrivacyPolicy(_Strict):
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    tenants: dict[str, TenantPolicy] = Field(default_factory=dict)
    trust_remote_code: list[str] = Field(default_factory=list)

    def retention_for(self, tenant: str) -> RetentionSpec:
        t = self.tenants.get(tenant)
        if t is None or t.retention is None:
            return self.retention
        merged = self.retention.model_dump()
        merged.update(t.retention.model_dump(exclude_unset=True))
        return RetentionSpec.model_validate(merged)

    def encrypted(self, tenant: str) -> bool:
        t = self.tenants.get(tenant)
        return bool(t and t.encryption)


def policy_path(ws: Workspace) -> Path:
    return Path(ws.root) / POLICY_FILE


def load_policy(ws_or_root: Any) -> PrivacyPolicy:
    root = Path(ws_or_root) if isinstance(ws_or_root, (str, Path)) else Path(ws_or_root.root)
    path = root / POLICY_FILE
    if not path.exists():
        return PrivacyPolicy()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=str(path)) from None
    try:
        return PrivacyPolicy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            field = ".".join(str(x) for x in e["loc"]) or "(top level)"
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"{field}: {msg}")
        raise ConfigError("; ".join(lines), where=str(path),
                          hint="the keys are described in docs/privacy.md") from None
