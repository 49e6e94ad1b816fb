"""Distributed refine: our per-record stages as datatrove pipeline steps (local, Slurm or Ray executor).

datatrove (the `distributed` extra) shards a corpus over tasks and runs a list of pipeline steps
on each shard. This module maps our records onto its `Document` and wraps our stages as steps:

  ConversationReader   our JSONL (one Conversation.to_dict() per line) → Documents
  StudioNormalizeStep  engine.data.stages.normalize.normalize_conversation on each Document
  ConversationWriter   Documents → our JSONL, one file per task (${rank}.jsonl)

A Document carries the whole conversation in `metadata["conversation"]` (the source of truth that
our steps read and write); `text` is a flat "role: content" view, refreshed by every step, for
datatrove's own text blocks (MinHash signatures, language or quality filters). `run_local` runs
reader → normalize → writer on a LocalPipelineExecutor; docs/refine-scale.md has the design, which
stages are per-record and which are global, and the Slurm/Ray recipe.

Offline: importing this module calls engine.offline.enforce() before datatrove is imported (it
imports huggingface_hub, which reads HF_HUB_OFFLINE at import time), and sets LOGURU_DIAGNOSE=NO
(a failed task's traceback would otherwise print record text into datatrove's logs); the worker
processes import this module when they unpickle the steps, so they run with the egress guard as
well.
datatrove writes only into the output folders and the logging folder it is given; `run_local` puts
the logging folder inside the output directory.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from engine import offline

offline.enforce()
# datatrove logs a failed task's traceback with loguru, whose default "diagnose" mode prints the
# values of the local variables (records, customer text): off, before loguru is imported; the
# worker processes inherit the variable
os.environ["LOGURU_DIAGNOSE"] = "NO"

from engine.config import NormalizeSpec  # noqa: E402
from engine.config.refine import INSTALL_DISTRIBUTED  # noqa: E402
from engine.data.stages.normalize import normalize_conversation  # noqa: E402
from engine.errors import DataError, StudioError  # noqa: E402
from engine.records import Conversation  # noqa: E402

try:
    from datatrove.data import Document, DocumentsPipeline
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.readers.base import BaseDiskReader
    from datatrove.pipeline.writers.disk_base import DiskWriter
    from datatrove.utils.typeshelper import StatHints
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    raise StudioError("the distributed refine needs datatrove, which is not installed",
                      where="refine.executor",
                      hint=f"install the extra: {INSTALL_DISTRIBUTED}") from exc

SHARDS_DIR = "shards"
RECORDS_DIR = "records"
LOGS_DIR = "logs"
STEP_TYPE = "💬 - REFINE"


# ----------------------------------------------------------------------- record ↔ document
def conversation_text(messages: list[dict[str, Any]]) -> str:
    """The flat text view of a conversation that datatrove's text blocks see."""
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)


def to_document(record: dict[str, Any]) -> Document:
    """One JSONL line (Conversation.to_dict(), optionally with "hints"/"changed_by") → Document."""
    conv = Conversation.from_dict(record)
    metadata: dict[str, Any] = {"conversation": conv.to_dict(),
                                "changed_by": list(record.get("changed_by") or [])}
    if record.get("hints"):
        metadata["hints"] = record["hints"]
    return Document(text=conversation_text(conv.messages), id=conv.id, metadata=metadata)


def from_document(doc: Document) -> Conversation:
    conv = Conversation.from_dict(doc.metadata["conversation"])
    conv.hints = dict(doc.metadata.get("hints") or {})
    return conv


def update_document(doc: Document, conv: Conversation, stage: str, changed: bool) -> Document:
    doc.metadata["conversation"] = conv.to_dict()
    doc.text = conversation_text(conv.messages)
    if changed:
        doc.metadata.setdefault("changed_by", []).append(stage)
    return doc


# ---------------------------------------------------------------------------- pipeline steps
class ConversationReader(BaseDiskReader):
    """Reads our JSONL files (sorted by name, files[rank::world_size] per task, as datatrove shards).

    A line that is not a conversation record is an error naming file and line, never skipped:
    these files are written by our own ingest, so a bad line means a bug or a damaged file.
    """

    name = "💬 Conversations"

    def __init__(self, data_folder: Any, glob_pattern: str = "*.jsonl", recursive: bool = False):
        super().__init__(data_folder, glob_pattern=glob_pattern, recursive=recursive,
                         add_file_path=False)

    def read_file(self, filepath: str) -> Iterator[Document]:
        with self.data_folder.open(filepath, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                with self.track_time():
                    try:
                        doc = to_document(json.loads(raw))
                    except (ValueError, KeyError, TypeError) as exc:
                        raise DataError("line is not a conversation record",
                                        where=f"{filepath}:{number}",
                                        hint=f"expected Conversation JSON ({type(exc).__name__})") from None
                yield doc


class ConversationStep(PipelineStep):
    """Base of our per-record steps: apply `process` to each Document's conversation."""

    type = STEP_TYPE
    stage = "stage"

    def process(self, conv: Conversation) -> Conversation:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data or ():
            self.stat_update(StatHints.total)
            with self.track_time():
                conv = from_document(doc)
                out = self.process(conv)
                changed = out.messages != conv.messages
                if changed:
                    self.stat_update("changed")
                doc = update_document(doc, out, self.stage, changed)
            self.stat_update(StatHints.forwarded)
            yield doc


class StudioNormalizeStep(ConversationStep):
    """The normalize stage (unicode, whitespace, control characters, empty turns) per record."""

    name = "🧹 Normalize"
    stage = "normalize"

    def __init__(self, spec: NormalizeSpec | dict[str, Any] | None = None):
        super().__init__()
        self.spec = spec if isinstance(spec, NormalizeSpec) else NormalizeSpec.model_validate(spec or {})

    def process(self, conv: Conversation) -> Conversation:
        out, dropped = normalize_conversation(conv, self.spec)
        if dropped:
            self.stat_update("turns_dropped", value=dropped)
        return out


class ConversationWriter(DiskWriter):
    """Writes one Conversation.to_dict() per line, plus "changed_by" (stages that changed the
    record, for lineage) and, only with keep_hints=True, the in-flight "hints" for a later stage."""

    default_output_filename = "${rank}.jsonl"
    name = "💬 Conversations"

    def __init__(self, output_folder: Any, output_filename: str | None = None, keep_hints: bool = False):
        super().__init__(output_folder, output_filename=output_filename, compression=None, mode="wb")
        self.keep_hints = keep_hints

    def _default_adapter(self, document: Document) -> dict[str, Any]:
        record = dict(document.metadata["conversation"])
        record["changed_by"] = list(document.metadata.get("changed_by") or [])
        if self.keep_hints and document.metadata.get("hints"):
            record["hints"] = document.metadata["hints"]
        return record

    def _write(self, document: dict[str, Any], file_handler: IO[bytes], _filename: str) -> None:
        line = json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n"
        file_handler.write(line.encode("utf-8"))


# ------------------------------------------------------------------------------- local runner
@dataclass
class LocalRun:
    """What run_local produced: record files in rank order, datatrove's logs, merged counters."""

    output_dir: Path
    files: list[Path]
    logging_dir: Path
    stats: dict[str, int]

    def records(self) -> list[Conversation]:
        """Every output record, in input order (task files in rank order, lines in order)."""
        return [Conversation.from_dict(json.loads(line)) for path in self.files
                for line in path.read_text(encoding="utf-8").splitlines() if line]


def shard_jsonl(source: Path, target: Path, tasks: int) -> list[Path]:
    """Split one JSONL file into `tasks` contiguous shards (blank lines dropped, order kept)."""
    with open(source, "rb") as f:
        total = sum(1 for raw in f if raw.strip())
    per = -(-total // tasks) if total else 0
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = [target / f"{i:05d}.jsonl" for i in range(tasks)]
    outs = [open(p, "wb") for p in paths]
    try:
        with open(source, "rb") as f:
            i = 0
            for raw in f:
                if raw.strip():
                    outs[min(i // per, tasks - 1)].write(raw if raw.endswith(b"\n") else raw + b"\n")
                    i += 1
    finally:
        for out in outs:
            out.close()
    return paths


def _step_stats(logging_dir: Path) -> dict[str, int]:
    """Our counters from datatrove's merged stats.json: documents read and written, records the
    normalize step changed, turns it dropped."""
    path = logging_dir / "stats.json"
    blocks = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    wanted = {
        f"{ConversationReader.type}: {ConversationReader.name}": {"documents": "read"},
        f"{StudioNormalizeStep.type}: {StudioNormalizeStep.name}": {"changed": "changed",
                                                                   "turns_dropped": "turns_dropped"},
        f"{ConversationWriter.type}: {ConversationWriter.name}": {StatHints.total: "written"},
    }
    out = {"read": 0, "written": 0, "changed": 0, "turns_dropped": 0}
    for block in blocks:
        for key, label in wanted.get(block.get("name", ""), {}).items():
            value = (block.get("stats") or {}).get(key, 0)
            out[label] += int(value["total"] if isinstance(value, dict) else value)
    return out


def run_local(input_jsonl: Path, output_dir: Path, *, tasks: int, workers: int,
              normalize: NormalizeSpec | None = None, start_method: str = "forkserver") -> LocalRun:
    """Normalize every conversation of `input_jsonl` (a JSONL file, or a folder of *.jsonl
    shards) with datatrove's LocalPipelineExecutor: `tasks` shards, `workers` processes.

    Writes only under `output_dir`, which must be new or empty: records/${rank}.jsonl, logs/
    (datatrove's logs, stats and completion markers) and, for a single input file, shards/ (the
    split input, removed after a successful run).
    """
    offline.enforce()
    if tasks < 1 or workers < 1:
        raise StudioError(f"tasks and workers must be at least 1 (got {tasks}, {workers})",
                          where="run_local")
    input_jsonl, output_dir = Path(input_jsonl), Path(output_dir)
    if not input_jsonl.exists():
        raise DataError("input not found", where=str(input_jsonl),
                        hint="give a JSONL file of conversations or a folder of *.jsonl shards")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise StudioError("output directory is not empty", where=str(output_dir),
                          hint="use a new directory; datatrove would skip tasks it finds completed")
    output_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    shards = output_dir / SHARDS_DIR
    if input_jsonl.is_dir():
        source = input_jsonl
    else:
        shard_jsonl(input_jsonl, shards, tasks)
        source = shards
    records, logs = output_dir / RECORDS_DIR, output_dir / LOGS_DIR
    pipeline = [
        ConversationReader(str(source)),
        StudioNormalizeStep(normalize or NormalizeSpec()),
        ConversationWriter(str(records)),
    ]
    executor = LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks),
                                     logging_dir=str(logs), skip_completed=False,
                                     start_method=start_method)
    executor.run()
    if source == shards:
        shutil.rmtree(shards)
    files = sorted(records.glob("*.jsonl")) if records.is_dir() else []
    return LocalRun(output_dir=output_dir, files=files, logging_dir=logs, stats=_step_stats(logs))
