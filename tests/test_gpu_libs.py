"""Quiet CPU commands: GPU-only libraries stay hidden unless a config needs them (QLoRA imports them).

`studio --help`, `studio models list` and a tiny LoRA `studio train` run as a user runs them; their
stderr may hold our own lines (progress, preflight) but nothing a third-party library printed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, child_env, make_project, studio

# What a third-party library's warning looks like on stderr: a `warnings` line (file path and
# category), a logging record of bitsandbytes or of the `kernels` hub client, or a site-packages path.
THIRD_PARTY = re.compile(r"site-packages|dist-packages|\w+Warning:|bitsandbytes|kernels-community"
                         r"|gemm_4bit|publisher trust", re.IGNORECASE)


def third_party_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if THIRD_PARTY.search(line)]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    tmp = tmp_path_factory.mktemp("quiet")
    proj = make_project(tmp / "proj", tickets=24)
    home = tmp / "home"
    home.mkdir()
    for name in ("sft_lora.yaml", "qlora.yaml"):
        cfg = yaml.safe_load((proj / "configs" / name).read_text())
        cfg["train"]["max_steps"] = 2
        cfg["train"].pop("save_steps", None)
        (proj / "configs" / f"tiny_{name}").write_text(yaml.safe_dump(cfg))
    return {"dir": proj, "home": home, "tiny": tiny_model_dir}


def run(project: dict, *args: str) -> subprocess.CompletedProcess[str]:
    res = studio(*args, cwd=project["dir"], home=project["home"])
    assert res.returncode == 0, res.stderr
    return res


def test_plain_cpu_commands_print_no_third_party_warning(project: dict) -> None:
    for args in (("--help",), ("models", "list")):
        assert third_party_lines(run(project, *args).stderr) == [], args
    run(project, "models", "import", str(project["tiny"]), "--name", "smollm2-135m-instruct")
    run(project, "refine", "configs/refine_tickets.yaml")
    res = run(project, "train", "configs/tiny_sft_lora.yaml")
    assert "preflight" in res.stderr  # stderr was captured, and holds our own lines
    assert third_party_lines(res.stderr) == []


def test_qlora_imports_bitsandbytes_itself(project: dict) -> None:
    pytest.importorskip("bitsandbytes")
    if not list((project["dir"] / "studio-workspace").glob("tenants/default/datasets/*/v1")):
        run(project, "models", "import", str(project["tiny"]), "--name", "smollm2-135m-instruct")
        run(project, "refine", "configs/refine_tickets.yaml")
    res = run(project, "train", "configs/tiny_qlora.yaml", "--json")
    run_id = json.loads(res.stdout)["run_id"]
    manifest = json.loads(next(project["dir"].glob(f"studio-workspace/tenants/default/runs/{run_id}/"
                                                    "manifest.json")).read_text())
    assert manifest["config"]["train"]["adapter"] == "qlora"


def test_hide_then_require_restores_the_libraries_view() -> None:
    pytest.importorskip("bitsandbytes")
    code = """if True:
        import json
        from engine import gpu_libs
        gpu_libs.hide()
        import peft, transformers
        from peft.import_utils import is_bnb_available
        from transformers.utils import is_bitsandbytes_available
        before = [is_bnb_available(), is_bitsandbytes_available()]
        bnb = gpu_libs.require("bitsandbytes")
        after = [is_bnb_available(), is_bitsandbytes_available(), hasattr(bnb.nn, "Linear4bit")]
        print(json.dumps([before, after]))"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(env={"PYTHONPATH": str(ROOT)}),
                         capture_output=True, text=True, timeout=300, check=True)
    before, after = json.loads(res.stdout.strip().splitlines()[-1])
    assert before == [False, False]
    assert after == [True, True, True]
