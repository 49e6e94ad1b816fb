"""Progress of `refine.executor: datatrove`: one rich task per datatrove phase, its tasks completed
out of its tasks, polled from datatrove's completion markers while the phases run (on this
machine or as Slurm job arrays). A resumed run starts each bar at the tasks already completed.

Only engine/data/refine_datatrove.py imports this module.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

POLL = 0.5  # seconds between two looks at the completion markers


def completed(logs: Path, tasks: int) -> int:
    folder = logs / "completions"
    return sum((folder / f"{r:05d}").exists() for r in range(tasks)) if folder.is_dir() else 0


class PhaseProgress:
    """`with PhaseProgress(progress, [(name, tasks, logs), …]):` while the phases run. With
    progress None it does nothing."""

    def __init__(self, progress: "Progress | None", phases: list[tuple[str, int, Path]]):
        self.progress, self.phases = progress, phases
        self.ids: list["TaskID"] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PhaseProgress":
        if self.progress is None:
            return self
        for name, tasks, logs in self.phases:
            self.ids.append(self.progress.add_task(f"datatrove {name}", total=tasks,
                                                   completed=completed(logs, tasks)))
        self._thread = threading.Thread(target=self._poll, name="datatrove-progress", daemon=True)
        self._thread.start()
        return self

    def _update(self) -> None:
        assert self.progress is not None
        for task, (_name, tasks, logs) in zip(self.ids, self.phases):
            self.progress.update(task, completed=completed(logs, tasks))

    def _poll(self) -> None:
        while not self._stop.wait(POLL):
            self._update()

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._update()  # the final count: all of them after a success
