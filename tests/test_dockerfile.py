"""The Dockerfile, linted against what it calls (CI cannot build CUDA images): every copied path and
script exists, every script option and variable it passes is one the script takes, its pins equal
the set-up scripts', the extras exist, and the README's `docker run … run configs/quickstart.yaml`
finds the sample data the image generates where the config looks for it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last:]


def args() -> dict[str, str]:
    return dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)


def run_commands(stage: list[tuple[str, str]] | None = None) -> list[str]:
    """Each shell command of the RUN lines (split on && ; and if/then)."""
    cmds = []
    for word, rest in stage or instructions():
        if word == "RUN":
            for part in re.split(r"&&|;|\bthen\b|\bfi\b", rest):
                part = re.sub(r"^\s*if\s+", "", part).strip()
                if part:
                    cmds.append(part)
    return cmds


def workdir() -> Path:
    return Path([a for w, a in final_stage() if w == "WORKDIR"][-1])


def test_copied_paths_exist_and_everything_the_package_needs_is_copied() -> None:
    copied = []
    for word, rest in final_stage():
        if word == "COPY" and not rest.startswith("--from"):
            copied += shlex.split(rest)[:-1]
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert {"pyproject.toml", "README.md", "engine"} <= set(copied)
    assert pyproject["project"]["readme"] == "README.md"


def test_scripts_it_runs_exist_and_take_the_options_and_variables_it_passes() -> None:
    seen = set()
    for cmd in run_commands():
        words = shlex.split(cmd)
        env = [w.split("=", 1)[0] for w in words if re.fullmatch(r"[A-Z_]+=.*", w)]
        words = [w for w in words if not re.fullmatch(r"[A-Z_]+=.*", w)]
        scripts = [w for w in words if w.startswith("scripts/")]
        for script in scripts:
            path = ROOT / script
            assert path.is_file(), f"RUN {cmd!r}: {script} does not exist"
            seen.add(script)
            text = path.read_text(encoding="utf-8")
            for var in env:
                assert var in text, f"RUN {cmd!r}: {script} does not read {var}"
            options = [w.split("=", 1)[0] for w in words[words.index(script) + 1:] if w.startswith("--")]
            if options and script.endswith(".py"):
                helptext = subprocess.run([sys.executable, str(path), "--help"], capture_output=True,
                                          text=True, cwd=ROOT, check=True).stdout
                for opt in options:
                    assert opt in helptext, f"RUN {cmd!r}: {script} has no option {opt}"
    assert {"scripts/setup_vllm_env.sh", "scripts/make_sample_data.py"} <= seen


def _script_value(script: str, pattern: str) -> str:
    m = re.search(pattern, (ROOT / "scripts" / script).read_text(encoding="utf-8"))
    assert m, f"{pattern!r} not found in scripts/{script}"
    return m.group(1)


def test_pins_equal_the_setup_scripts_and_torch_comes_from_the_cuda_index() -> None:
    a = args()
    assert a["TORCH_VERSION"] == _script_value("setup_env.sh", r'TORCH_VERSION="([^"]+)"')
    assert a["VLLM_VERSION"] == _script_value("setup_vllm_env.sh",
                                              r'cuda\) PKG="vllm"; VLLM_VERSION="\$\{STUDIO_VLLM_VERSION:-([^}]+)\}"')
    assert re.fullmatch(r"cu\d{3}", a["TORCH_CUDA"])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    torch_req = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch"))
    low, high = re.findall(r"[\d.]+", torch_req)[:2]
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(low) <= as_tuple(a["TORCH_VERSION"]) < as_tuple(high), torch_req
    torch_installs = [c for c in run_commands(final_stage()) if re.search(r"pip install .*\btorch\b", c)]
    assert torch_installs, "the image must install torch itself, pinned"
    for cmd in torch_installs:
        assert '"torch==${TORCH_VERSION}"' in cmd, cmd
        assert '--index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"' in cmd, cmd
    for cmd in run_commands():  # every other package it names is pinned too
        if "pip install" in cmd:
            for req in re.findall(r'"([A-Za-z][\w.-]*[^"]*)"', cmd):
                if not req.startswith((".", "https://")):
                    assert "==" in req, f"unpinned {req!r} in {cmd!r}"


def test_extras_it_installs_exist_and_presets_find_their_packages() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    installs = " ".join(c for c in run_commands(final_stage()) if "pip install" in c)
    for group in re.findall(r'"\.\[([\w,]+)\]"', installs):
        for extra in group.split(","):
            assert extra in extras, f".[{extra}] is not an extra of pyproject.toml"
    assert "bitsandbytes" in " ".join(extras["gpu"])  # QLoRA
    for preset in (ROOT / "configs" / "accelerate").glob("*.yaml"):
        if "deepspeed_config" in yaml.safe_load(preset.read_text(encoding="utf-8")):
            assert '"deepspeed==${DEEPSPEED_VERSION}"' in installs, f"{preset.name} needs deepspeed"
    a = args()
    assert a["FLASH_ATTN"] == "1" and "flash-attn==${FLASH_ATTN_VERSION}" in " ".join(run_commands())
    env = " ".join(r for w, r in final_stage() if w == "ENV")
    vllm_venv = re.search(r"STUDIO_VLLM_VENV=(\S+)", installs + " " + " ".join(run_commands(final_stage())))
    assert vllm_venv and f"STUDIO_VLLM_PYTHON={vllm_venv.group(1)}/bin/python" in env


def test_entrypoint_and_the_documented_examples_are_real_commands() -> None:
    stage = final_stage()
    entry = [r for w, r in stage if w == "ENTRYPOINT"][-1]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert yaml.safe_load(entry) == ["studio"] and "studio" in pyproject["project"]["scripts"]
    header = DOCKERFILE.read_text(encoding="utf-8")
    run_line = re.search(r"docker run [^\n]*expert-studio run (\S+)", header)
    assert run_line, "the Dockerfile's header shows how to run the quickstart"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert run_line.group(0) in readme, "README.md shows the same docker run line as the Dockerfile"
    check = re.search(r"--entrypoint python expert-studio (scripts/\S+)", header)
    assert check and (ROOT / check.group(1)).is_file()


def test_the_quickstart_finds_the_sample_data_the_image_generates(tmp_path: Path) -> None:
    """Replays the image's data step in a copy of its working directory, then resolves the
    quickstart's inputs the way the config loader does (relative to the config file)."""
    header = DOCKERFILE.read_text(encoding="utf-8")
    config = re.search(r"expert-studio run (\S+)", header).group(1)
    image = tmp_path / workdir().relative_to("/")
    (image / "configs").mkdir(parents=True)
    (image / config).write_bytes((ROOT / config).read_bytes())
    for cmd in run_commands(final_stage()):
        words = shlex.split(cmd)
        if words[0] == "python" and words[1].startswith("scripts/make_"):
            subprocess.run([sys.executable, str(ROOT / words[1]), *words[2:]], cwd=image, check=True,
                           capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    spec = yaml.safe_load((image / config).read_text(encoding="utf-8"))
    inputs = spec["refine"]["inputs"]
    assert inputs
    for item in inputs:
        path = (image / config).parent / item["path"]
        assert path.is_file() and path.stat().st_size > 0, f"{config}: {item['path']} is not in the image"


@pytest.mark.parametrize("script", ["scripts/setup_env.sh", "scripts/setup_vllm_env.sh",
                                    "scripts/gpu_check.sh"])
def test_shell_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)
