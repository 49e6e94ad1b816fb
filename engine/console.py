"""Terminal output: human messages and progress bars go to stderr, results to stdout."""

from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

err = Console(stderr=True, highlight=False, soft_wrap=True)
# Piped output (scripts, tests) is not cut to 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def make_progress() -> Progress:
    """A progress display with counts, elapsed time and ETA, drawn on stderr."""
    # lazy: CLI start-up time (rich.progress and rich.live are not needed for --help)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def quiet_libraries() -> None:
    """Our progress bars replace the libraries' own; their deprecation chatter is not the user's.

    Called by the CLI before any ML library is imported (several read these at import time).
    """
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for module in ("transformers", "trl", "peft", "accelerate", "datasets", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
