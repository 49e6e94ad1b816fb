"""Privacy tests: key material goes to a per-test config dir, never the user's real one."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "user-config"
    monkeypatch.setenv("STUDIO_CONFIG_DIR", str(d))
    monkeypatch.delenv("STUDIO_SIGNING_KEY", raising=False)
    monkeypatch.delenv("STUDIO_KMS_HOOK", raising=False)
    return d
