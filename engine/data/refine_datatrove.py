"""`refine.executor: datatrove`: the per-record refine stages as datatrove tasks over shards.

Only engine/data/refine.py imports this module, and only for that executor (datatrove is the
optional `distributed` extra; engine.data.distributed imports it). What runs where:

  ingest  a task per input file: the local format readers write ingested/NNNNN.jsonl and the
          lines' offsets; ingest rejects stay in place as lines of their own
          (refine_datatrove_ingest.py)
  tasks   BlockReader → RecordStagesStep → OutcomeWriter: blocks of BLOCK ingested lines dealt
          round robin over `tasks`; record_workers.process (system prompt, normalize, turns,
          quality, PII detection), the very function of the in-process path, one output line
          per input line, output/NNNNN.jsonl
  driver  `outcomes` deals the lines back in input order, checking every id against its input
          line (a missing or extra line is an error, never a silent gap), and RefineRun consumes
          them exactly as it consumes record_workers.run: PII surrogates numbered in input order
          (the numbering kept on disk, surrogate_store.py),
          exact and near dedup, split, decontam, LLM stages, files, card and lineage. So the
          version is byte-identical to `executor: local`.
  dedup   with `datatrove.dedup: datatrove`, MinHash signatures on the tasks, then bucket,
          cluster and decision phases; the driver reads the decisions (refine_datatrove_dedup.py)
  decontam with `datatrove.decontam: datatrove`, one more phase checks the spooled train/val
          records against the eval index, pickled in shards (refine_datatrove_decontam.py)
  llm     with `datatrove.llm: datatrove`, each LLM stage (judge, extract_qa, rewrite,
          preferences) is one more phase, a model per task, on whole batches; the driver merges
          its group lines back in order, holding the earlier stages' rejects until the batch
          boundaries (refine_datatrove_llm.py, held_rejects.py)
  slurm   every phase as a Slurm job array that this process submits and waits for
          (refine_datatrove_slurm.py); a progress bar per phase (refine_datatrove_progress.py)

The work directory, <tenant>/tmp/refine-<key>/ (mode 0700, key: the refine section without its
executor settings, the seed, the inputs' sha256 and `tasks`), holds ingested/, output/, dedup/,
decontam/, llm-<stage>/ and logs/
(datatrove's logs, stats and completion markers unless `datatrove.logging_dir` says otherwise).
The output lines hold PII findings with their original values until the driver replaces them, so
the directory is customer data: it stays inside the tenant and is removed when the version is
registered. A refine that fails or is interrupted keeps it; rerun the same config and, with
`skip_completed` (datatrove's default), the completed tasks are skipped (a half-written task file
is rewritten from its start, so nothing is duplicated). `skip_completed: false` starts afresh and
removes the directory at the end whatever happened. A lock file keeps two refines of the same
config off one directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from engine import offline

offline.enforce()  # before datatrove: it imports huggingface_hub, which reads HF_HUB_OFFLINE once

# engine.data.distributed raises the install hint when datatrove is missing
from engine.data.distributed import STEP_TYPE  # noqa: E402
from engine.data.minhash import lsh_params  # noqa: E402
from engine.data.held_rejects import HeldRejects  # noqa: E402
from engine.data.record_workers import Outcome, process  # noqa: E402
from engine.data.refine_datatrove_decontam import DecontamCheck, EvalShards, verdict  # noqa: E402
from engine.data.refine_datatrove_ingest import (  # noqa: E402
    BlockReader,
    IngestStep,
    Part,
    dumps,
    ingest_error,
    ingest_parts,
    ingested_lines,
    undecodable_input,
)
from engine.data.refine_datatrove_llm import LlmStageStep, llm_block, merge_group  # noqa: E402
from engine.data.refine_datatrove_ipc import ipc_tempdir  # noqa: E402
from engine.data.refine_datatrove_progress import PhaseProgress  # noqa: E402
from engine.data.refine_datatrove_slurm import SlurmWait, slurm_executor  # noqa: E402
from engine.data.refine_datatrove_dedup import (  # noqa: E402
    DecisionReader,
    DedupFeatures,
    PeakMemory,
    Signature,
    minhash_config,
    phase_four,
    phase_three,
    phase_two,
)
from engine.data.surrogate_store import DiskIds  # noqa: E402
from engine.data.stages.llm.dispatch import LLM_STAGES, stage_model, stage_on  # noqa: E402
from engine.data.stages.pii import Finding  # noqa: E402
from engine.errors import StudioError  # noqa: E402
from engine.generation.transformers_backend import TransformersBackend  # noqa: E402
from engine.hashing import sha256_json  # noqa: E402
from engine.models.resolve import ModelRef, resolve_model  # noqa: E402
from engine.records import Conversation, Reject  # noqa: E402

from datatrove.data import Document, DocumentsPipeline  # noqa: E402
from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.base import PipelineStep  # noqa: E402
from datatrove.pipeline.readers.base import BaseDiskReader  # noqa: E402
from datatrove.pipeline.writers.disk_base import DiskWriter  # noqa: E402
from datatrove.utils.typeshelper import StatHints  # noqa: E402

if TYPE_CHECKING:
    from rich.progress import Progress

    from engine.config import DecontamSpec, DedupSpec, RefineSpec, StudioConfig
    from engine.data.refine_passes import InputFile
    from engine.registry import Registry
    from engine.workspace import Workspace

BLOCK = 64  # input lines per block of the round robin (bigger: fewer switches, less balance)
FORMAT = 4  # of the shard lines and dedup files; part of the work directory's key
# what an LLM task generates with: (model dir, adapter dir or None, torch threads) → backend
TASK_BACKEND: Any = TransformersBackend



def decode_conversation(line: dict[str, Any]) -> Conversation:
    conv = Conversation.from_dict(line["record"])
    conv.hints = dict(line.get("hints") or {})
    return conv


def encode_outcome(out: Outcome) -> dict[str, Any]:
    return {"outcome": {"record": out.conv.to_dict(), "hints": out.conv.hints,
                        "changed_by": out.changed_by, "events": dict(out.events),
                        "reject": out.reject.to_dict() if out.reject is not None else None,
                        "findings": [[f.turn, f.start, f.end, f.type, f.value]
                                     for f in out.findings]}}


def decode_outcome(data: dict[str, Any]) -> Outcome:
    return Outcome(conv=decode_conversation(data), changed_by=list(data["changed_by"]),
                   events=Counter(data["events"]),
                   reject=Reject.from_dict(data["reject"]) if data["reject"] else None,
                   findings=[Finding(*f) for f in data["findings"]])


# ---------------------------------------------------------------------------- pipeline steps
class ShardReader(BaseDiskReader):
    """Reads input/NNNNN.jsonl (datatrove gives task r the files sorted(files)[r::tasks], here
    exactly shard r). Each line becomes a Document whose metadata is the parsed line."""

    name = "💬 Refine shards"

    def __init__(self, data_folder: Any):
        super().__init__(data_folder, glob_pattern="*.jsonl", add_file_path=False)

    def read_file(self, filepath: str) -> Iterator[Document]:
        with self.data_folder.open(filepath, "rb") as f:
            for number, raw in enumerate(f, start=1):
                with self.track_time():
                    doc = Document(text="", id=f"{filepath}:{number}", metadata=json.loads(raw))
                yield doc


class RecordStagesStep(PipelineStep):
    """record_workers.process on every record line; ingest rejects pass through unchanged."""

    type = STEP_TYPE
    name = "🧹 Record stages"

    def __init__(self, spec: "RefineSpec"):
        super().__init__()
        self.spec = spec

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data or ():
            self.stat_update(StatHints.total)
            if "record" in doc.metadata:
                with self.track_time():
                    out = process(decode_conversation(doc.metadata), self.spec)
                    doc.metadata = encode_outcome(out)
                self.stat_update("rejected" if out.reject is not None else StatHints.forwarded)
            yield doc


class OutcomeWriter(DiskWriter):
    """output/${rank}.jsonl: each Document's metadata as one JSON line (datatrove opens it "wb",
    so a task that is run again rewrites its file from the start)."""

    default_output_filename = "${rank}.jsonl"
    name = "💬 Refine outcomes"

    def __init__(self, output_folder: Any):
        super().__init__(output_folder, compression=None, mode="wb")

    def _default_adapter(self, document: Document) -> dict[str, Any]:
        return document.metadata

    def _write(self, document: dict[str, Any], file_handler: IO[bytes], _filename: str) -> None:
        file_handler.write(dumps(document))


def _lines(path: Path, offsets: list[int], rank: int, n: int) -> list[bytes]:
    """Up to `n` lines of `path` from offsets[rank] on (advanced); none if it does not exist
    (datatrove's writer creates no file for a task without documents)."""
    if n <= 0 or not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(offsets[rank])
        out = []
        while len(out) < n and (line := f.readline()):
            out.append(line)
        offsets[rank] = f.tell()
    return out


# ----------------------------------------------------------------------------------- the job
class DatatroveJob:
    """One refine's per-record stages on datatrove: `outcomes` is RefineRun's record_runner."""

    def __init__(self, cfg: "StudioConfig", spec: "RefineSpec", ws: "Workspace",
                 inputs: list["InputFile"], registry: "Registry | None" = None):
        self.spec, self.options = spec, spec.datatrove
        if self.options.executor == "ray":
            raise StudioError("datatrove executor 'ray' is not wired yet",
                              where="refine.datatrove.executor",
                              hint="use local or slurm (docs/refine-scale.md says what remains)")
        # datatrove's MinHash decides the dedup (refine_datatrove_dedup.py) unless told otherwise
        self.dedup_on = self.options.dedup == "datatrove" and (spec.dedup.exact or spec.dedup.near)
        self.decontam_on = self.options.decontam == "datatrove" and spec.decontam.enabled
        # the LLM stages' models, resolved here (an unknown one stops the refine before any work)
        self.models: dict[str, ModelRef] = {}
        if self.options.llm == "datatrove" and registry is not None:
            for stage in LLM_STAGES:
                if stage_on(stage, spec.llm):
                    self.models[stage] = resolve_model(registry, stage_model(stage, spec.llm) or "",
                                                       cfg.tenant)
        key = sha256_json({
            "format": FORMAT, "tenant": cfg.tenant, "seed": cfg.seed, "tasks": self.options.tasks,
            "refine": spec.model_dump(mode="json", exclude={"workers", "executor", "datatrove"}),
            "dedup": [self.options.dedup, self.options.minhash.model_dump(mode="json")],
            "decontam": [self.options.decontam, self.options.decontam_shard_items],
            "ingest_part_mb": self.options.ingest_part_mb,
            "llm": {stage: [str(ref.model_dir), ref.weights] for stage, ref in self.models.items()},
            "inputs": [(i.label, i.sha256) for i in inputs]})
        base = (cfg.resolve_path(self.options.work_dir) if self.options.work_dir
                else ws.tmp_dir(cfg.tenant))  # slurm: a filesystem every node shares
        self.work = base / f"refine-{key[:20]}"
        self.inputs = inputs
        self.parts: list[Part] = [(n, None) for n in range(len(inputs))]  # set by execute
        self.ingested, self.output_dir = self.work / "ingested", self.work / "output"
        self.note: Callable[[Conversation | Reject, str], None] = lambda item, label: None
        self.minhash = minhash_config(*self._bands(spec))
        self.decider = (DecisionReader(self.work / "dedup" / "decisions", self.options.tasks)
                        if self.dedup_on else None)
        self.logs = (cfg.resolve_path(self.options.logging_dir) if self.options.logging_dir
                     else self.work / "logs")
        self.progress: "Progress | None" = None  # rich; set by the refine
        self.surrogate_ids: DiskIds | None = None  # the PII numbering on disk, made by `open`
        self._lock_fd: int | None = None
        self._lock = self.work.with_name(self.work.name + ".lock")

    def _bands(self, spec: "RefineSpec") -> tuple[int, int]:
        """(num_buckets, hashes_per_bucket): the in-process LSH banding of the signature unless
        `datatrove.minhash` says otherwise; the content key's four words in one band without
        near dedup."""
        if not spec.dedup.near:
            return 1, 4
        bands, rows = lsh_params(spec.dedup.threshold, spec.dedup.num_perm)
        bands = self.options.minhash.num_buckets or bands
        rows = self.options.minhash.hashes_per_bucket or rows
        if bands * rows > spec.dedup.num_perm:
            raise StudioError(f"{bands} buckets × {rows} hashes need {bands * rows} MinHash "
                              f"values, the signature has dedup.num_perm = {spec.dedup.num_perm}",
                              where="refine.datatrove.minhash",
                              hint="lower num_buckets or hashes_per_bucket, or raise num_perm")
        return bands, rows

    # -- lifecycle --------------------------------------------------------------------------
    def open(self) -> "DatatroveJob":
        """Take the lock (a sibling file), then the work directory: fresh unless resuming."""
        self.work.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = self.work.with_name(self.work.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StudioError("another refine of this config is running", where=str(self.work),
                              hint="wait for it to finish") from None
        self._lock_fd, self._lock = fd, lock
        if not self.options.skip_completed:
            shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(exist_ok=True, mode=0o700)
        self.surrogate_ids = DiskIds(self.work / "surrogates.sqlite")
        return self

    def close(self, succeeded: bool) -> None:
        """Remove the work directory after a success (or always without skip_completed), then
        the lock. A job that never got the lock touches nothing."""
        if self._lock_fd is None:
            return
        if self.surrogate_ids is not None:
            self.surrogate_ids.close()
            self.surrogate_ids = None
        if succeeded or not self.options.skip_completed:  # a configured logging_dir is kept
            shutil.rmtree(self.work, ignore_errors=True)
        self._lock.unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    # -- the three phases -------------------------------------------------------------------
    def pipeline(self) -> list[Any]:
        steps = [BlockReader(str(self.ingested), len(self.parts), BLOCK),
                 RecordStagesStep(self.spec),
                 OutcomeWriter(str(self.output_dir))]
        if self.dedup_on:
            dedup = self.work / "dedup"
            steps += [DedupFeatures(self.spec.dedup, self.spec.pii),
                      Signature(str(dedup / "signatures"), str(dedup / "records"), self.minhash,
                                self.spec.dedup)]
        return [*steps, PeakMemory()]

    def _deal(self, lines: Iterable[bytes], target: Path, block_size: int | None = None) -> None:
        """Lines → target/NNNNN.jsonl in blocks of BLOCK, round robin (all `tasks` files, empty
        ones too: datatrove deals sorted files to ranks), one block at a time, so a job of many
        tasks holds no file open. Written beside and renamed into place when complete: the same
        input and config give the same shards, so a resumed run's finished tasks stay valid."""
        tasks, size = self.options.tasks, block_size or BLOCK
        staging = target.with_name(target.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700, parents=True)
        for r in range(tasks):
            (staging / f"{r:05d}.jsonl").touch(mode=0o600)
        block: list[bytes] = []
        number = 0
        for line in lines:
            block.append(line)
            if len(block) == size:
                with open(staging / f"{number % tasks:05d}.jsonl", "ab") as f:
                    f.writelines(block)
                block, number = [], number + 1
        if block:
            with open(staging / f"{number % tasks:05d}.jsonl", "ab") as f:
                f.writelines(block)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(staging, target)

    def _executor(self, pipeline: list[Any], tasks: int, logs: Path) -> LocalPipelineExecutor:
        o = self.options
        return LocalPipelineExecutor(
            pipeline, tasks=tasks, workers=o.workers, logging_dir=str(logs),
            skip_completed=o.skip_completed, start_method=o.start_method,
            randomize_start_duration=o.randomize_start_duration)

    def execute(self) -> None:
        """Phase 0: ingest, a task per input file; phase 1: the per-record stages (and the dedup
        signatures); with datatrove's dedup, phase 2 (one task per band) and 3 (one task) find
        the clusters, and 4 (one task) decides inside them. Each phase has its own logs and
        completion markers, so a rerun resumes at the phase that failed. A bad input stops the
        refine with its DataError (file, line and field), as the local refine does."""
        self.parts = ingest_parts(self.inputs, self.options.ingest_part_mb)
        phases = [([IngestStep(self.inputs, self.parts, str(self.ingested)), PeakMemory()],
                   len(self.parts),
                   self.logs / "ingest", "ingest"),
                  (self.pipeline(), self.options.tasks, self.logs, "records")]
        if self.dedup_on:
            dedup, tasks = self.work / "dedup", self.options.tasks
            phases += [
                (phase_two(dedup, self.minhash, self.spec.dedup, tasks),
                 self.minhash.num_buckets, self.logs / "minhash-buckets", "buckets"),
                (phase_three(dedup, self.minhash), 1, self.logs / "minhash-clusters", "clusters"),
                (phase_four(dedup, self.spec.dedup, tasks), 1, self.logs / "dedup-decisions",
                 "decisions")]
        try:
            self._run_phases(phases)
        except Exception:
            err = ingest_error(self.ingested, len(self.parts))
            if err is not None:
                raise err from None
            raise
        err = undecodable_input(self.ingested, self.inputs, self.parts)
        if err is not None:
            raise err

    def _run_phases(self, phases: list[tuple[list[Any], int, Path, str]]) -> None:
        """Run (pipeline, tasks, logging dir, name) phases one after the other: here, or as
        chained Slurm job arrays that this process submits and waits for. A progress bar per
        phase counts its completed tasks."""
        with PhaseProgress(self.progress, [(name, tasks, logs) for _, tasks, logs, name in phases]):
            if self.options.executor == "slurm":
                chained: list[Any] = []
                for pipeline, tasks, logs, name in phases:
                    depends = chained[-1][0] if chained else None
                    chained.append((slurm_executor(self.options, pipeline, tasks, logs, name,
                                                   depends), tasks, logs, name))
                SlurmWait(chained).run()
                return
            with ipc_tempdir():
                for pipeline, tasks, logs, _name in phases:
                    self._executor(pipeline, tasks, logs).run()

    def outcomes(self, inputs: list["InputFile"]) -> Iterator[Outcome | Reject]:
        """RefineRun's record_runner (it ingests too): run the tasks, then merge back in input
        order. `note` gets every item with its input's label, as RefineRun.ingest counts them."""
        assert inputs == self.inputs
        self.execute()
        yield from self.merged()

    def merged(self) -> Iterator[Outcome | Reject]:
        """The task outputs in input order, each line checked against its ingested line."""
        signed = [0] * self.options.tasks  # per task: records that passed quality (signed)
        source = ingested_lines(self.ingested, len(self.parts))
        for r, (f, src), out in self._round_robin(lambda r, n: list(islice(source, n)),
                                                     self.output_dir):
            item = self._checked(r, json.loads(src), out)
            self.note(item.conv if isinstance(item, Outcome) else item,
                      self.inputs[self.parts[f][0]].label)
            if self.decider is not None and isinstance(item, Outcome) and item.reject is None:
                self.decider.expect(r, signed[r], item.conv.id)
                signed[r] += 1
            yield item

    def _round_robin(self, take: Callable[[int, int], list[Any]], outputs: Path,
                     block_size: int | None = None) -> Iterator[tuple[int, Any, bytes]]:
        """(shard, input, its output line or b"" if missing) in input order (the inverse of the
        round robin): `take(r, n)` gives the next n inputs, dealt to shard r, whose output lines
        are in outputs/r. An output file with more lines than its inputs is an error."""
        tasks, size = self.options.tasks, block_size or BLOCK
        read_out = [0] * tasks  # byte offsets per file
        number = 0
        while True:
            r = number % tasks
            sources = take(r, size)
            results = _lines(outputs / f"{r:05d}.jsonl", read_out, r, len(sources))
            results += [b""] * (len(sources) - len(results))
            for src, out in zip(sources, results):
                yield r, src, out
            if len(sources) < size:
                break
            number += 1
        for r in range(tasks):
            path = outputs / f"{r:05d}.jsonl"
            if path.exists() and path.stat().st_size > read_out[r]:
                raise self._mismatch(r, "has more lines than its input shard", path)

    def eval_index(self, spec: "DecontamSpec", dedup: "DedupSpec") -> EvalShards:
        """RefineRun's eval index: shards of `decontam_shard_items` items, pickled as they fill."""
        return EvalShards(spec, dedup, self.work / "decontam" / "index",
                          self.options.decontam_shard_items)

    def decontam(self, spool: Path, stream: Iterable[Conversation], index: EvalShards
                 ) -> Iterator[Conversation | Reject]:
        """RefineRun's decontam_runner: the spooled train/val records (the lines of `spool`, in
        the order `stream` yields them), checked against every index shard by datatrove tasks;
        the verdicts merged back in order, each checked against its record."""
        work = self.work / "decontam"
        shards = index.finish()
        with open(spool, "rb") as f:
            self._deal(f, work / "input")
        self._run_phases([([ShardReader(str(work / "input")),
                            DecontamCheck(str(work / "index"), shards, str(work / "scratch")),
                            OutcomeWriter(str(work / "output")), PeakMemory()],
                           self.options.tasks, self.logs / "decontam", "decontam")])
        read_in = [0] * self.options.tasks
        verdicts = self._round_robin(
            lambda r, n: _lines(work / "input" / f"{r:05d}.jsonl", read_in, r, n),
            work / "output")
        for conv in stream:
            r, _src, out = next(verdicts, (0, b"", b""))
            path = work / "output" / f"{r:05d}.jsonl"
            line = json.loads(out) if out else None
            if line is None or line.get("id") != conv.id:
                raise self._mismatch(r, "does not match the spooled records", path)
            yield verdict(conv, line)
        if next(verdicts, None) is not None:
            raise self._mismatch(0, "has more verdicts than records", work / "output")

    def llm_threads(self) -> int:
        """torch threads per task of an LLM phase: the cores over the tasks running at once (on
        Slurm, the cores each task is given)."""
        o = self.options
        if o.executor == "slurm":
            return o.cpus_per_task
        at_once = min(o.tasks, o.workers) if o.workers > 0 else o.tasks
        return max(1, (os.cpu_count() or 1) // at_once)

    def llm(self, stage: str, stream: Iterable[Conversation], *,
            notes: list[dict[str, Any]] | None, writer: Callable[[str, dict[str, Any]], None] | None,
            stats: Counter | None, remember: Callable[[Conversation], Any],
            select: Callable[[Conversation], bool] | None,
            hold: Callable[[], HeldRejects]) -> Iterator[Conversation | Reject]:
        """RefineRun's llm_runner: LLM stage `stage` as a datatrove phase (refine_datatrove_llm.py).
        The stream is spooled (every record, marked whether `select` picks it), the picked ones
        dealt to the tasks in blocks of whole batches; then the spool is read back in order, a
        picked record giving way to its group line (checked against its id). The rejects of the
        stages before, which arrive while the stream is spooled, are held and released at the
        batch boundaries, where the streaming stage would have let them through."""
        work = self.work / f"llm-{stage}"
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        batch = self.spec.llm.batch_size
        spool, block = work / "spool.jsonl", llm_block(BLOCK, batch)
        held = hold()
        with open(spool, "wb") as f:
            def picked() -> Iterator[bytes]:
                for conv in stream:
                    line = dumps({"record": conv.to_dict()})
                    chosen = select is None or select(conv)
                    f.write((b"+" if chosen else b"-") + line)
                    if chosen:
                        held.position += 1  # rejects from here on come after this record
                        yield line

            self._deal(picked(), work / "input", block)
        held.stop()
        ref = self.models[stage]
        step = LlmStageStep(stage, self.spec.llm, str(ref.model_dir),
                            str(ref.adapter_dir) if ref.adapter_dir else None, self.llm_threads(),
                            TASK_BACKEND)
        self._run_phases([([ShardReader(str(work / "input")), step,
                            OutcomeWriter(str(work / "output")), PeakMemory()],
                           self.options.tasks, self.logs / f"llm-{stage}", f"llm-{stage}")])
        read_in = [0] * self.options.tasks
        groups = self._round_robin(
            lambda r, n: _lines(work / "input" / f"{r:05d}.jsonl", read_in, r, n),
            work / "output", block)
        number = 0  # of the picked record
        with open(spool, "rb") as f:
            for raw in f:
                conv = Conversation.from_dict(json.loads(raw[1:])["record"])
                if raw[:1] == b"-":
                    yield conv
                    continue
                r, _src, out = next(groups, (0, b"", b""))
                group = json.loads(out) if out else None
                if group is None or group.get("id") != conv.id:
                    raise self._mismatch(r, "does not match its records",
                                         work / "output" / f"{r:05d}.jsonl")
                if number % batch == 0:  # the stage would pull this batch now
                    held.release(number + batch)
                number += 1
                remember(conv)  # what the stage saw: the reject examples and the rewrite's diff
                yield from merge_group(group, notes=notes, writer=writer, stats=stats)
        if next(groups, None) is not None:
            raise self._mismatch(0, "has more lines than records", work / "output")
        held.release(None)
        held.close()
        spool.unlink()

    def _checked(self, rank: int, src: dict[str, Any], raw: bytes) -> Outcome | Reject:
        if not raw:
            raise self._mismatch(rank, "is missing lines of its input shard")
        line = json.loads(raw)
        if "reject" in src:
            if line != src:
                raise self._mismatch(rank, "does not match its input shard")
            return Reject.from_dict(src["reject"])
        if "outcome" not in line or line["outcome"]["record"]["id"] != src["record"]["id"]:
            raise self._mismatch(rank, "does not match its input shard")
        return decode_outcome(line["outcome"])

    def _mismatch(self, rank: int, what: str, path: Path | None = None) -> StudioError:
        return StudioError(f"the output of datatrove task {rank} {what}",
                           where=str(path or self.output_dir / f"{rank:05d}.jsonl"),
                           hint="rerun with refine.datatrove.skip_completed: false")
