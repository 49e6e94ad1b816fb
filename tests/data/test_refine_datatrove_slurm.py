"""`refine.datatrove.executor: slurm` (engine/data/refine_datatrove_slurm.py) on a stand-in
scheduler: CI has no Slurm cluster, so `sbatch`, `srun`, `squeue` and `scancel` on PATH are
small scripts that run each submitted array task at once, as its own process, the way a node
would (SLURM_ARRAY_TASK_ID set, the launch script datatrove wrote executed by bash). What is real:
datatrove's SlurmPipelineExecutor (pickling the phases, the sbatch scripts, the `afterok` chain,
`launch_pickled_pipeline` on the "node"), our steps unpickled in another process, the wait, the
cancel after a failed phase, and the resume.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

pytest.importorskip("datatrove", reason="datatrove (the optional 'distributed' extra) is not installed")

from engine.config import load_config  # noqa: E402
from engine.data import refine_datatrove_slurm  # noqa: E402
from engine.data.refine import refine  # noqa: E402
from engine.errors import StudioError  # noqa: E402
from engine.registry import Registry  # noqa: E402
from engine.workspace import Workspace  # noqa: E402
from tests.helpers import noisy_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl")

SBATCH = r'''
import json, os, re, subprocess, sys
state = os.environ["FAKE_SLURM_STATE"]
script = open(sys.argv[-1]).read()
opts = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, re.M))
counter = os.path.join(state, "next_id")
job = int(open(counter).read()) if os.path.exists(counter) else 100
open(counter, "w").write(str(job + 1))
dependency = next((a.split("=", 1)[1] for a in sys.argv[1:-1] if a.startswith("--dependency=")),
                  opts.get("dependency", ""))
with open(os.path.join(state, "jobs.jsonl"), "a") as f:
    f.write(json.dumps({"id": job, "name": opts["job-name"], "array": opts.get("array", ""),
                        "pipeline": "launch_pickled_pipeline" in script,
                        "dependency": dependency, "partition": opts["partition"],
                        "time": opts["time"]}) + "\n")
def status(j):
    path = os.path.join(state, f"{j}.state")
    return open(path).read() if os.path.exists(path) else "done"
needs = [d.split(":", 1)[1] for d in dependency.split(",") if d.startswith("afterok:")]
if any(status(j) != "done" for j in needs):
    outcome = "pending"  # DependencyNeverSatisfied: it waits in the queue until cancelled
elif os.environ.get("FAKE_SLURM_FAIL", "<none>") in opts["job-name"]:
    outcome = "failed"  # its nodes died
else:
    outcome = "done"
    first, last = (opts.get("array") or "0-0").split("%")[0].split("-")
    for i in range(int(first), int(last) + 1):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(i), "SLURM_JOB_ID": str(job),
               "SLURM_NODELIST": "node-1", "RUN_OFFSET": "0"}
        with open(os.path.join(state, f"{job}_{i}.out"), "w") as out:
            if subprocess.run(["bash", sys.argv[-1]], env=env, stdout=out, stderr=out).returncode:
                outcome = "failed"
open(os.path.join(state, f"{job}.state"), "w").write(outcome)
print(f"Submitted batch job {job}")
'''
SRUN = r'''
import os, sys
args = sys.argv[1:]
while args and args[0].startswith("-"):
    args = args[2:] if args[0] == "-n" else args[1:]
os.execvp(args[0], args)
'''
SQUEUE = r'''
import os, sys
state = os.environ["FAKE_SLURM_STATE"]
ids = sys.argv[sys.argv.index("--jobs") + 1].split(",")
for j in ids:  # jobs ran inside sbatch: only those waiting on a failed dependency are queued
    path = os.path.join(state, f"{j}.state")
    if os.path.exists(path) and open(path).read() == "pending":
        print(f"{j} cpu studio-refine PD (DependencyNeverSatisfied)")
'''
SCONTROL = "import sys\nprint(sys.argv[-1])\n"  # show hostnames <nodelist>: one node
SCANCEL = r'''
import os, sys
state = os.environ["FAKE_SLURM_STATE"]
with open(os.path.join(state, "cancelled"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
for j in sys.argv[1:]:
    open(os.path.join(state, f"{j}.state"), "w").write("cancelled")
'''


@pytest.fixture()
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, state = tmp_path / "slurm-bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in (("sbatch", SBATCH), ("srun", SRUN), ("squeue", SQUEUE),
                       ("scancel", SCANCEL), ("scontrol", SCONTROL)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    venv_bin = Path(sys.executable).parent  # launch_pickled_pipeline, merge_stats
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{venv_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the "nodes" import this checkout
    monkeypatch.setattr(refine_datatrove_slurm, "POLL", 0.05)
    return state


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("noisy")
    noisy_corpus(base / "data" / "noisy", 60, 6)
    (base / "configs").mkdir()
    text = (ROOT / "configs" / "refine_noisy.yaml").read_text(encoding="utf-8")
    (base / "configs" / "local.yaml").write_text(text, encoding="utf-8")
    # 5 bands, not the default 25: each array task is a fresh process on the stand-in (the
    # versions are still the local refine's on this corpus, which the tests check)
    (base / "configs" / "slurm.yaml").write_text(text.replace("refine:\n", (
        "refine:\n  executor: datatrove\n  datatrove: {executor: slurm, tasks: 3, "
        "partition: cpu, time: '00:30:00', work_dir: ../shared/work,\n"
        "  minhash: {num_buckets: 5, hashes_per_bucket: 5}}\n"), 1), encoding="utf-8")
    ws = Workspace(base / "ws-local").ensure()
    refine(load_config(base / "configs" / "local.yaml"), ws, Registry(ws.registry_path))
    return base


def _jobs(state: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (state / "jobs.jsonl").read_text().splitlines()]


def _local(corpus: Path) -> Path:
    (path,) = (corpus / "ws-local" / "tenants" / "default" / "datasets").glob("*/v1")
    return path


def test_a_slurm_refine_submits_chained_arrays_waits_and_writes_the_local_version(
        corpus: Path, fake_slurm: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    result = refine(load_config(corpus / "configs" / "slurm.yaml"), ws, Registry(ws.registry_path))

    for name in OUTPUTS:
        assert (result.path / name).read_bytes() == (_local(corpus) / name).read_bytes(), name
    arrays = [j for j in _jobs(fake_slurm) if j["pipeline"]]  # not datatrove's merge_stats jobs
    assert [(j["name"], j["array"]) for j in arrays] == [
        ("studio-refine-ingest", "0-4"), ("studio-refine-records", "0-2"),  # 5 inputs, 3 tasks
        ("studio-refine-buckets", "0-4"), ("studio-refine-clusters", "0-0"),
        ("studio-refine-decisions", "0-0"), ("studio-refine-decontam", "0-2")]
    assert arrays[0]["dependency"] == ""  # the first waits for nothing
    for before, after in zip(arrays[:4], arrays[1:5]):  # each waits for the one before
        assert after["dependency"] == f"afterok:{before['id']}"
    assert {(j["partition"], j["time"]) for j in arrays} == {("cpu", "00:30:00")}
    assert not (fake_slurm / "cancelled").exists()
    assert not any((corpus / "shared" / "work").iterdir())  # removed after the version landed


def test_a_failed_phase_cancels_what_waits_behind_it_and_the_rerun_resumes(
        corpus: Path, fake_slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    registry = Registry(ws.registry_path)
    monkeypatch.setenv("FAKE_SLURM_FAIL", "-buckets")  # that array's nodes die
    with pytest.raises(StudioError, match="phase 'buckets' ended before all its 5 tasks") as err:
        refine(load_config(corpus / "configs" / "slurm.yaml"), ws, registry)
    assert err.value.where.endswith("logs/minhash-buckets")
    ids = {j["name"]: str(j["id"]) for j in _jobs(fake_slurm) if j["pipeline"]}
    cancelled = (fake_slurm / "cancelled").read_text().split()
    assert ids["studio-refine-clusters"] in cancelled  # it would wait for ever
    assert ids["studio-refine-decisions"] in cancelled
    assert registry.get_dataset("default", "brightwave-support") is None

    monkeypatch.delenv("FAKE_SLURM_FAIL")
    (fake_slurm / "jobs.jsonl").unlink()
    result = refine(load_config(corpus / "configs" / "slurm.yaml"), ws, registry)
    names = [j["name"] for j in _jobs(fake_slurm) if j["pipeline"]]
    assert names == ["studio-refine-buckets", "studio-refine-clusters",  # records were complete
                     "studio-refine-decisions", "studio-refine-decontam"]
    for name in OUTPUTS:
        assert (result.path / name).read_bytes() == (_local(corpus) / name).read_bytes(), name
    shutil.rmtree(corpus / "shared", ignore_errors=True)


def test_the_example_cluster_config_reaches_sbatch_as_written(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "refine_slurm.yaml")
    options = cfg.refine.datatrove
    executor = refine_datatrove_slurm.slurm_executor(options, [], options.tasks, tmp_path / "logs",
                                                     "records", None)
    script = executor.get_launch_file_contents(executor.get_sbatch_args(options.tasks), "run")
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=02:00:00", "#SBATCH --array=0-255%64",
                 "#SBATCH --mem-per-cpu=4G", "#SBATCH --cpus-per-task=1", "#SBATCH --qos=normal",
                 "#SBATCH --account=data-team", "#SBATCH --job-name=studio-refine-records",
                 "source /shared/expert-studio/.venv/bin/activate"):
        assert line in script.splitlines() or line in script, line
    assert "mail-user" not in script and "gres" not in script
    llm = refine_datatrove_slurm.slurm_executor(options, [], 8, tmp_path / "logs-llm", "llm-judge",
                                                None)  # the LLM phases also get llm_sbatch_args
    script = llm.get_launch_file_contents(llm.get_sbatch_args(8), "run")
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --account=data-team" in script
    half = options.model_copy(update={"mem_per_cpu_gb": 1.5})  # sbatch takes whole units only
    executor = refine_datatrove_slurm.slurm_executor(half, [], 2, tmp_path / "logs2", "records",
                                                     None)
    script = executor.get_launch_file_contents(executor.get_sbatch_args(2), "run")
    assert [x for x in script.splitlines() if "mem-per-cpu" in x] == ["#SBATCH --mem-per-cpu=1536M"]


def test_ctrl_c_while_waiting_cancels_every_job_of_the_refine(fake_slurm: Path,
                                                                tmp_path: Path) -> None:
    class Submitted:  # what SlurmPipelineExecutor.run leaves behind: the job ids
        def __init__(self, job_id: int):
            self.job_id = job_id

        def run(self) -> None:
            pass

    for job in (7, 8):  # queued, as the stand-in's squeue reports them
        (fake_slurm / f"{job}.state").write_text("pending")
    phases = [(Submitted(7), 2, tmp_path / "a", "records"), (Submitted(8), 1, tmp_path / "b", "buckets")]

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        refine_datatrove_slurm.SlurmWait(phases, sleep=interrupted).run()  # type: ignore[arg-type]
    assert (fake_slurm / "cancelled").read_text().split() == ["7", "8"]
