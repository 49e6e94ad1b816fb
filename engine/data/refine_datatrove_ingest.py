"""Ingest of `refine.executor: datatrove` as datatrove tasks, and how the next phase reads it.

Only engine/data/refine_datatrove.py imports this module. The refine's input order is the
configured inputs' order, then each file's own. On datatrove:

  phase 0, a task   IngestStep: the local path's format reader (engine/data/ingest/, read_input)
     per part       on the file the driver resolved and hashed; every record and ingest reject
                    becomes one line of ingested/FFFFF.jsonl, in file order, and the byte offset
                    of each line goes to ingested/FFFFF.idx (uint64, plus one for the end). A
                    part is a whole input file, or, for a JSON Lines input larger than
                    `datatrove.ingest_part_mb`, a span of its lines (ingest.line_spans: a byte
                    range from a line start, its lines numbered as in the file), so one huge
                    export ingests on many cores. A bad input (DataError: file, line and field)
                    is written to ingested/FFFFF.error.json and the task fails; the driver
                    raises that error. A span's task notes how many of its lines decoded
                    (FFFFF.lines.json): an input none of whose lines decode is the DataError the
                    whole-file reader raises.
  phase 1 reader    BlockReader: the input order in blocks of `block` lines, dealt round robin
                    over the tasks as the driver used to deal them; task r reads the blocks g
                    with g % tasks == r through the offsets, and nothing else. A Document's id is
                    its line's place in the input order.
  driver            `ingested_lines` reads the lines back in input order for the final pass,
                    which checks every task output line against its input line.

So the driver never parses the corpus: it hashes the inputs (before the refine starts) and reads
the ingested lines once, in the final pass.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import offline
from engine.data.ingest import json_lines_input, line_spans, read_input
from engine.data.ingest.common import Span, not_utf8
from engine.errors import DataError
from engine.records import Conversation, Reject

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

from datatrove.data import Document, DocumentsPipeline  # noqa: E402
from datatrove.pipeline.base import PipelineStep  # noqa: E402
from datatrove.utils.typeshelper import StatHints  # noqa: E402

if TYPE_CHECKING:
    from engine.data.refine_passes import InputFile

_FLUSH = 1 << 16  # offsets buffered before they are written


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def encode_input(item: Conversation | Reject) -> dict[str, Any]:
    if isinstance(item, Reject):
        return {"reject": item.to_dict()}
    line: dict[str, Any] = {"record": item.to_dict()}
    if item.hints:
        line["hints"] = item.hints
    return line


def _paths(folder: Path, f: int) -> tuple[Path, Path, Path]:
    return (folder / f"{f:05d}.jsonl", folder / f"{f:05d}.idx", folder / f"{f:05d}.error.json")


Part = tuple[int, "Span | None"]  # (input number, span of its lines or None: the whole file)


def ingest_parts(inputs: list["InputFile"], part_mb: float) -> list[Part]:
    """The ingest tasks: each input file whole, or, for a JSON Lines input over `part_mb` MiB,
    spans of its lines of about that size (input order, then file order)."""
    limit = int(part_mb * 2**20)
    parts: list[Part] = []
    for number, inp in enumerate(inputs):
        size = inp.path.stat().st_size
        if size > limit and json_lines_input(inp.path, inp.spec):
            parts += [(number, span) for span in line_spans(inp.path, -(-size // limit))]
        else:
            parts.append((number, None))
    return parts


class IngestStep(PipelineStep):
    """Phase 0, task f: part f (an input file or a span of its lines) → ingested/FFFFF.jsonl
    and its line offsets."""

    type = "📖 - READER"
    name = "📥 Ingest"

    def __init__(self, inputs: list["InputFile"], parts: list[Part], folder: str):
        super().__init__()
        self.inputs, self.parts, self.folder = inputs, parts, Path(folder)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        assert data is None and world_size == len(self.parts)
        number, span = self.parts[rank]
        inp = self.inputs[number]
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        lines_path, idx_path, error_path = _paths(self.folder, rank)
        error_path.unlink(missing_ok=True)
        offsets, pos = array("Q", [0]), 0
        decoded = undecodable = 0
        try:
            with open(lines_path, "wb") as out, open(idx_path, "wb") as idx, self.track_time():
                for item in read_input(inp.path, inp.spec, label=inp.label, span=span):
                    if isinstance(item, Reject) and item.reason == "bad_encoding":
                        undecodable += 1
                    else:  # every line that decodes gives one item
                        decoded += 1
                    line = dumps(encode_input(item))
                    out.write(line)
                    pos += len(line)
                    offsets.append(pos)
                    if len(offsets) >= _FLUSH:
                        offsets.tofile(idx)
                        del offsets[:]
                    self.stat_update("rejected" if isinstance(item, Reject) else "records")
                offsets.tofile(idx)
            if span is not None:
                _lines_json(self.folder, rank).write_text(json.dumps(
                    {"decoded": decoded, "undecodable": undecodable}), encoding="utf-8")
        except DataError as err:
            error_path.write_text(json.dumps({"what": err.what, "where": err.where,
                                              "hint": err.hint}), encoding="utf-8")
            raise RuntimeError(f"ingest of {inp.label} failed: {err}") from None
        yield from ()


def _lines_json(folder: Path, f: int) -> Path:
    return folder / f"{f:05d}.lines.json"


def ingest_error(folder: Path, files: int) -> DataError | None:
    """The first input's DataError that phase 0 wrote down, if any."""
    for f in range(files):
        path = _paths(folder, f)[2]
        if path.exists():
            err = json.loads(path.read_text(encoding="utf-8"))
            return DataError(err["what"], where=err["where"], hint=err["hint"])
    return None


def undecodable_input(folder: Path, inputs: list["InputFile"], parts: list[Part]
                      ) -> DataError | None:
    """For the inputs read in spans: the first none of whose lines decode (the DataError the
    whole-file reader raises), if any."""
    totals: dict[int, list[int]] = {}
    for f, (number, span) in enumerate(parts):
        if span is not None:
            counts = json.loads(_lines_json(folder, f).read_text(encoding="utf-8"))
            total = totals.setdefault(number, [0, 0])
            total[0] += counts["decoded"]
            total[1] += counts["undecodable"]
    for number, (decoded, undecodable) in sorted(totals.items()):
        if undecodable and not decoded:
            return not_utf8(inputs[number].path, undecodable)
    return None


def _offsets(folder: Path, files: int) -> list[np.ndarray]:
    """Every input's line offsets, memory-mapped: a task pages in those of its blocks only."""
    out = []
    for f in range(files):
        path = _paths(folder, f)[1]
        if path.stat().st_size < 8:
            raise ValueError(f"{path}: ingest did not finish (no end offset)")
        out.append(np.memmap(path, dtype="<u8", mode="r"))
    return out


class BlockReader(PipelineStep):
    """Phase 1's reader: task r's blocks of the ingested lines (see the module docstring)."""

    type = "📖 - READER"
    name = "💬 Refine blocks"

    def __init__(self, folder: str, files: int, block: int):
        super().__init__()
        self.folder, self.files, self.block = Path(folder), files, block

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        offsets = _offsets(self.folder, self.files)
        counts = np.array([len(o) - 1 for o in offsets], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)])  # first global line of each file
        total = int(starts[-1])
        handle: tuple[int, Any] | None = None
        try:
            for first in range(rank * self.block, total, world_size * self.block):
                line = first
                end = min(first + self.block, total)
                while line < end:
                    f = int(np.searchsorted(starts, line, side="right")) - 1
                    a, b = line - int(starts[f]), min(end, int(starts[f + 1])) - int(starts[f])
                    if handle is None or handle[0] != f:
                        if handle is not None:
                            handle[1].close()
                        handle = (f, open(_paths(self.folder, f)[0], "rb"))
                    with self.track_time():
                        handle[1].seek(int(offsets[f][a]))
                        raw = handle[1].read(int(offsets[f][b] - offsets[f][a]))
                    for i, text in enumerate(raw.splitlines()):
                        self.stat_update(StatHints.total)
                        yield Document(text="", id=str(line + i), metadata=json.loads(text))
                    line += b - a
        finally:
            if handle is not None:
                handle[1].close()


def ingested_lines(folder: Path, files: int) -> Iterator[tuple[int, bytes]]:
    """(input number, line) of every ingested line, in input order."""
    for f in range(files):
        with open(_paths(folder, f)[0], "rb") as lines:
            for raw in lines:
                yield f, raw
