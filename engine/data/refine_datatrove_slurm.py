"""`refine.datatrove.executor: slurm`: the refine's datatrove phases as chained Slurm job arrays.

Only engine/data/refine_datatrove.py imports this module. datatrove's SlurmPipelineExecutor
pickles each phase into its logging dir and submits it with `sbatch` (phase 2 `afterok` phase 1,
phase 3 `afterok` phase 2), then returns: the jobs run `launch_pickled_pipeline` on the nodes.
`studio refine` waits here for them (SlurmWait), since the driver's final pass needs every task's
output. The work directory (`refine.datatrove.work_dir`) must be on a filesystem the nodes and
the driver share; the nodes need this project installed (`venv_path`) and see the same paths.

Waiting: every POLL seconds, a phase is done when all its completion markers exist. A phase
whose jobs have left the queue (`squeue`) without all of them failed: the jobs still queued
behind it (their dependency can never be met) are cancelled (`scancel`) and the refine stops
with an error naming the phase's logs. Ctrl-C or SIGTERM cancels every job of the refine. The
work directory is kept in both cases, so the same config resumes: datatrove submits only the
tasks without a completion marker.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import StudioError

from engine import offline  # noqa: E402

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

from datatrove.executor import SlurmPipelineExecutor  # noqa: E402

if TYPE_CHECKING:
    from engine.config import DatatroveSpec

log = logging.getLogger(__name__)
POLL = 10.0  # seconds between two looks at the markers and the queue


def slurm_executor(options: "DatatroveSpec", pipeline: list[Any], tasks: int, logs: Path,
                   phase: str, depends: SlurmPipelineExecutor | None) -> SlurmPipelineExecutor:
    """One phase as a job array, named `<job_name>-<phase>`; datatrove's own option names."""
    assert options.partition is not None and options.time is not None  # checked at config load
    gb = options.mem_per_cpu_gb
    sbatch_args = dict(options.sbatch_args)
    if phase.startswith("llm-"):  # the LLM stages' phases: a GPU each, say
        sbatch_args.update(options.llm_sbatch_args)
    if not float(gb).is_integer():  # sbatch takes whole units: "4.0G" is refused, "1536M" is not
        sbatch_args.setdefault("mem-per-cpu", f"{round(gb * 1024)}M")
    return SlurmPipelineExecutor(
        pipeline, tasks=tasks, time=options.time, partition=options.partition,
        cpus_per_task=options.cpus_per_task, mem_per_cpu_gb=int(gb) if gb >= 1 else 1,
        workers=options.workers, job_name=f"{options.job_name}-{phase}", qos=options.qos,
        venv_path=options.venv_path, sbatch_args=sbatch_args,
        logging_dir=str(logs), skip_completed=options.skip_completed,
        randomize_start_duration=options.randomize_start_duration, depends=depends,
        mail_type="NONE")


def _queued(job_ids: list[str]) -> bool:
    """Whether any of the jobs is still pending or running (an id Slurm has forgotten is not)."""
    if not job_ids:
        return False
    proc = subprocess.run(["squeue", "--noheader", "--jobs", ",".join(job_ids)],
                          capture_output=True, text=True, check=False)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _cancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, check=False)


class SlurmWait:
    """Submit the chained phases and wait until the last one completed (or one failed)."""

    def __init__(self, phases: list[tuple[SlurmPipelineExecutor, int, Path, str]],
                 sleep: Callable[[float], None] = time.sleep):
        self.phases, self.sleep = phases, sleep

    @staticmethod
    def _done(logs: Path, tasks: int) -> bool:
        return all((logs / "completions" / f"{r:05d}").exists() for r in range(tasks))

    def run(self) -> None:
        self.phases[-1][0].run()  # submits its dependencies first (datatrove's `depends`)
        ids = {name: str(ex.job_id) for ex, _, _, name in self.phases
               if ex.job_id not in (None, -1)}
        log.info("submitted the refine's Slurm jobs: %s",
                 ", ".join(f"{n} {i}" for n, i in ids.items()) or "none (all tasks completed)")
        try:
            while True:
                pending = [(ex, tasks, logs, name) for ex, tasks, logs, name in self.phases
                           if not self._done(logs, tasks)]
                if not pending:
                    return
                _ex, tasks, logs, name = pending[0]
                if name not in ids or not _queued([ids[name]]):
                    if self._done(logs, tasks):  # finished between the two looks
                        continue
                    raise StudioError(
                        f"the Slurm job of datatrove phase {name!r} ended before all its "
                        f"{tasks} tasks completed", where=str(logs),
                        hint="read the task logs there, then run the same config again: the "
                        "completed tasks are skipped")
                self.sleep(POLL)
        except BaseException:
            _cancel(list(ids.values()))  # jobs queued behind a failure would wait for ever
            raise
