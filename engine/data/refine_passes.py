"""One refine, stage by stage: streams records through the stages and writes the version's files.

refine.py owns the version directory and the registry; this module owns what happens between
the raw inputs and the output files (see STAGES, in order, in the pipeline docstring): the counts
per stage, input file and reject reason, the per-record lineage, reject examples for the card
(PII already redacted), the length histogram data and the PII residual scan of every record
written (stages/pii_residual.py; refine.py applies its gate).

Two passes keep memory bounded: pass 1 streams ingest → … → split, writes eval records and rejects
directly and spools train/val records and lineage entries to files; pass 2 reads the spool back,
decontaminates against the now complete eval set, runs the train/val-only LLM stages and writes
train.jsonl, val.jsonl (input order) and lineage.jsonl.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from array import array
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from engine.config import InputSpec, RefineSpec, StudioConfig
from engine.data import record_workers
from engine.data.held_rejects import HeldRejects
from engine.data.ingest import read_input
from engine.data.stages import pii
from engine.data.stages.decontam import EvalIndex, decontaminate, load_against
from engine.data.stages.dedup import dedup
from engine.data.stages.llm.backend import open_backend
from engine.data.stages.llm.dispatch import in_order, run_stage, stage_model, stage_on
from engine.data.stages.pii_residual import Residuals
from engine.data.stages.split import SPLITS, assign
from engine.records import Conversation, Reject

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from engine.registry import Registry
    from engine.workspace import Workspace

STAGES = ("ingest", "system_prompt", "normalize", "turns", "quality", "pii", "dedup", "judge",
          "split", "decontam", "extract_qa", "rewrite")
OUTPUT_FILES = ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl")
OPTIONAL_FILES = ("preferences.jsonl", "judge.jsonl")
EXAMPLES_PER_REASON = 3
_PROGRESS_BATCH = 256


@dataclass
class InputFile:
    """One configured input, checked and hashed before any work starts."""

    spec: InputSpec
    path: Path
    label: str
    sha256: str
    lines: int


def scan_file(path: Path) -> tuple[str, int]:
    """(sha256, number of lines) in one cheap binary pass."""
    h = hashlib.sha256()
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return h.hexdigest(), lines


class _Advancer:
    """Batches progress updates for one input file (rich's Progress takes a lock per call)."""

    def __init__(self, progress: "Progress | None", task: "TaskID | None"):
        self.progress, self.task, self.pending = progress, task, 0

    def __call__(self, n: int) -> None:
        self.pending += n
        if self.pending >= _PROGRESS_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.progress is not None and self.task is not None and self.pending:
            self.progress.advance(self.task, self.pending)
        self.pending = 0


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


class RefineRun:
    """State of one refine: open output files, counters, lineage spool, surrogates."""

    def __init__(self, cfg: StudioConfig, spec: RefineSpec, ws: "Workspace", registry: "Registry",
                 out_dir: Path, progress: "Progress | None" = None):
        self.cfg, self.spec, self.ws, self.registry = cfg, spec, ws, registry
        self.out_dir, self.progress = out_dir, progress
        self.files: dict[str, IO[str]] = {}
        for name in ("rejects.jsonl", "eval.jsonl"):
            self.files[name] = open(out_dir / name, "w", encoding="utf-8", newline="\n")
        self.spool_path = out_dir / ".spool.jsonl"  # train/val records between the passes
        # lineage entries, each spool in input order: eval records (pass 1), train/val (pass 2)
        self.lineage_paths = {"eval": out_dir / ".lineage-eval.jsonl",
                              "rest": out_dir / ".lineage-rest.jsonl"}
        self.files["spool"] = open(self.spool_path, "w", encoding="utf-8", newline="\n")
        for key, path in self.lineage_paths.items():
            self.files[f"lineage_{key}"] = open(path, "w", encoding="utf-8", newline="\n")
        self.surrogates = pii.Surrogates.for_spec(spec.pii)
        self.pii = pii.PiiStats()
        self.residual = Residuals(spec.pii)  # the leak gate's scan of every record written
        self.stage_counts: dict[str, Counter] = {s: Counter() for s in STAGES}
        self.rejects_by_stage: dict[str, Counter] = defaultdict(Counter)
        self.per_file: dict[str, Counter] = defaultdict(Counter)
        self.events: Counter = Counter()  # "<stage>.<event>"
        self.changed_by: dict[str, list[str]] = defaultdict(list)
        self.clusters: dict[str, list[str]] = {}
        self.examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.lengths = array("I")
        self.splits: Counter = Counter()
        self.decontam_index: Any = None  # an EvalIndex (or what eval_index_factory makes)
        self.llm: dict[str, Counter] = defaultdict(Counter)
        self._recent: OrderedDict[str, Conversation] = OrderedDict()  # for reject examples
        self._file_of_label: dict[str, str] = {}
        # what runs the per-record stages: None → record_workers.run (this machine, refine.workers
        # processes); `refine.executor: datatrove` puts engine/data/refine_datatrove.py's here
        self.record_runner: Callable[[Any], Iterable[record_workers.Outcome | Reject]] | None = None
        # True: record_runner gets the InputFiles and ingests them itself (calling note_ingested)
        self.runner_ingests = False
        # what decides the dedup: None → stages/dedup.py's in-process index; datatrove's MinHash
        # clusters (engine/data/refine_datatrove_dedup.py) with `refine.datatrove.dedup`
        self.dedup_runner: Callable[..., Iterable[Conversation | Reject]] | None = None
        # and the decontamination of pass 2: None → here; datatrove tasks (refine_datatrove.py),
        # which take the eval items into index shards on disk (eval_index_factory)
        self.decontam_runner: Callable[..., Iterable[Conversation | Reject]] | None = None
        self.eval_index_factory: Callable[..., Any] = EvalIndex
        # and the LLM stages: None → here, on one backend per model; datatrove tasks with the
        # model loaded per worker (refine_datatrove_llm.py), called as `_llm_stage` calls it
        self.llm_runner: Callable[..., Iterable[Conversation | Reject]] | None = None
        self._backends: dict[str, Any] = {}
        self._holds: list[HeldRejects] = []  # holding now, innermost last
        self._held: list[HeldRejects] = []  # every hold of the run (closed with it)
        self._length_of: Callable[[Conversation], int] | None = None
        self.length_unit = "characters"

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        for hold in self._held:
            hold.close()
        for f in self.files.values():
            if not f.closed:
                f.close()
        for p in (self.spool_path, *self.lineage_paths.values()):
            p.unlink(missing_ok=True)

    def output_files(self) -> list[str]:
        return [*OUTPUT_FILES, *(f for f in OPTIONAL_FILES if (self.out_dir / f).exists())]

    def _input_label(self, source_file: str) -> str:
        """The configured input a record came from (directory inputs label files 'dir/name')."""
        return self._file_of_label.get(source_file) or source_file.split("/", 1)[0]

    def _remember(self, conv: Conversation) -> Conversation:
        self._recent[conv.id] = conv
        if len(self._recent) > 2048:
            self._recent.popitem(last=False)
        return conv

    def _example(self, item: Reject, conv: Conversation | None) -> None:
        bucket = self.examples[item.reason]
        if len(bucket) >= EXAMPLES_PER_REASON:
            return
        messages = None
        if conv is not None:  # redacted with plain placeholders, never numbered like the data
            findings = pii.detect(conv, self.spec.pii)
            plain = pii.Surrogates(numbered=False, keep_originals=False)
            messages = plain.apply(conv, findings)[0].messages
        bucket.append({"reason": item.reason, "stage": item.stage, "detail": item.detail,
                       "source": item.source.label(), "messages": messages})

    def reject(self, item: Reject, conv: Conversation | None = None) -> None:
        self.rejects_by_stage[item.stage][item.reason] += 1
        self.stage_counts[item.stage]["rejected"] += 1
        self.per_file[self._input_label(item.source.file)]["rejected"] += 1
        if conv is None and item.record_id is not None:
            conv = self._recent.get(item.record_id)
        if item.record_id is not None:
            self.changed_by.pop(item.record_id, None)
        self._write_reject(item, conv)

    def _write_reject(self, item: Reject, conv: Conversation | None) -> None:
        """The reject's line and card example, now or (while a stage holds them) later."""
        if self._holds:
            self._holds[-1].add(item, conv)
            return
        self.files["rejects.jsonl"].write(_dumps(item.to_dict()))
        self._example(item, conv)

    def hold_rejects(self) -> HeldRejects:
        """For an llm_runner that takes in its whole input first: the rejects that arrive until
        its `stop` wait in the hold, which it releases where the streaming stage would have
        written them (engine/data/held_rejects.py)."""
        hold = HeldRejects(self.out_dir / f".held-{len(self._held)}.jsonl", self._write_reject,
                           lambda reason: len(self.examples.get(reason, ())),
                           EXAMPLES_PER_REASON, self._holds)
        self._held.append(hold)
        return hold

    def route(self, stage: str, stream: Iterable[Conversation | Reject]) -> Iterator[Conversation]:
        """Count what passes `stage`, write its rejects, pass conversations on."""
        counts = self.stage_counts[stage]
        for item in stream:
            if isinstance(item, Reject):
                self.reject(item)
            else:
                counts["out"] += 1
                yield self._remember(item)

    def through(self, stage: str, stream: Iterable[Conversation]) -> Iterator[Conversation]:
        """Count a stage that never rejects (or is off)."""
        counts = self.stage_counts[stage]
        for conv in stream:
            counts["out"] += 1
            yield conv

    # -- stages -----------------------------------------------------------------------------
    def ingest(self, inputs: list[InputFile]) -> Iterator[Conversation | Reject]:
        for inp in inputs:
            task = (self.progress.add_task(f"refine {inp.label}", total=inp.lines)
                    if self.progress is not None else None)
            advance = _Advancer(self.progress, task)
            for item in read_input(inp.path, inp.spec, label=inp.label, advance=advance):
                self.note_ingested(item, inp.label)
                yield item  # rejects too: written in input order, after the records before them
            advance.flush()
            if self.progress is not None and task is not None:
                self.progress.update(task, completed=inp.lines)

    def note_ingested(self, item: Conversation | Reject, label: str) -> None:
        """Count one ingested item of the input `label` (a record runner that ingests on its
        own, `runner_ingests`, calls this for each)."""
        self._file_of_label.setdefault(item.source.file, label)
        if isinstance(item, Conversation):
            self.per_file[label]["records"] += 1
            self.stage_counts["ingest"]["out"] += 1

    def record_stages(self, stream: Iterable[Conversation | Reject] | list[InputFile]
                      ) -> Iterator[Conversation]:
        """system_prompt → normalize → turns → quality → PII (detection possibly in workers).
        `stream` is the ingested items, or the inputs themselves for a `runner_ingests` runner.

        Ingest rejects travel through the workers' queue unchanged, so rejects.jsonl keeps
        input order whatever the number of workers."""
        outcomes = (self.record_runner(stream) if self.record_runner is not None
                    else record_workers.run(stream, self.spec, self.spec.workers))
        for out in outcomes:
            if isinstance(out, Reject):
                self.reject(out)
                continue
            for stage in ("system_prompt", "normalize", "turns"):
                self.stage_counts[stage]["out"] += 1
            self.events.update(out.events)
            if out.reject is not None:
                self.reject(out.reject, out.conv)
                continue
            self.stage_counts["quality"]["out"] += 1
            conv, counts = self.surrogates.apply(out.conv, out.findings)
            changed = list(out.changed_by)
            if counts:
                self.pii.add(conv.id, counts)
                changed.append("pii")
            if changed:
                self.changed_by[conv.id] = changed
            self.stage_counts["pii"]["out"] += 1
            yield self._remember(conv)

    def _llm_stage(self, stage: str, stream: Iterable[Conversation], *,
                   notes: list[dict[str, Any]] | None = None, writer: Any = None,
                   select: Callable[[Conversation], bool] | None = None
                   ) -> Iterator[Conversation | Reject]:
        """LLM stage `stage` over `stream`, its items in input order: here on the stage's model,
        or on `llm_runner`. With `select` (a 1:1 stage), only the records it picks go through the
        stage, batched among themselves; the others pass through in their place."""
        stats = None if stage == "judge" else self.llm[stage]
        if self.llm_runner is not None:
            yield from self.llm_runner(stage, stream, notes=notes, writer=writer, stats=stats,
                                       remember=self._remember, select=select,
                                       hold=self.hold_rejects)
            return
        model = stage_model(stage, self.spec.llm)
        assert model is not None
        if model not in self._backends:  # opened when the stage first pulls, once per model
            self._backends[model] = open_backend(model, self.registry, self.cfg.tenant)
        backend = self._backends[model]

        def run(records: Iterable[Conversation]) -> Iterator[Conversation | Reject]:
            return run_stage(stage, records, self.spec.llm, backend, notes=notes, writer=writer,
                             stats=stats, progress=self.progress)

        yield from (run(stream) if select is None else in_order(stream, select, run))

    def _llm_on(self, name: str) -> bool:
        return stage_on(name, self.spec.llm)

    # -- the two passes ---------------------------------------------------------------------
    def run(self, inputs: list[InputFile]) -> None:
        spec = self.spec
        self._setup_lengths()
        if spec.decontam.enabled:
            self.decontam_index = self.eval_index_factory(spec.decontam, spec.dedup)
            if spec.decontam.against:  # the customer's own eval files: read (and checked) first
                paths = [self.cfg.resolve_path(p) for p in spec.decontam.against]
                self.events["decontam.against_items"] += self.decontam_index.add_all(
                    load_against(paths))

        stream: Iterable[Conversation] = self.record_stages(
            inputs if self.runner_ingests else self.ingest(inputs))
        stream = self.route("dedup", (self.dedup_runner or dedup)(stream, spec.dedup,
                                                                   self.clusters))
        judge_file = None
        if self._llm_on("judge"):
            notes: list[dict[str, Any]] = []
            judge_file = open(self.out_dir / "judge.jsonl", "w", encoding="utf-8", newline="\n")
            self.files["judge.jsonl"] = judge_file

            def judged(deduped: Iterable[Conversation]) -> Iterator[Conversation | Reject]:
                for item in self._llm_stage("judge", deduped, notes=notes):
                    for note in notes:
                        judge_file.write(_dumps(self._generated(note, "judge.jsonl", note["id"],
                                                                [note])))
                    notes.clear()
                    yield item

            stream = self.route("judge", judged(stream))  # bound now: `stream` is rebound here
        else:
            stream = self.through("judge", stream)

        for pos, conv in enumerate(stream):
            name = assign(conv.id, self.cfg.seed, spec.split)
            self.stage_counts["split"]["out"] += 1
            if name == "eval":
                self._keep(conv, name, pos)
                if self.decontam_index is not None:
                    self.decontam_index.add(conv)
            else:
                self.files["spool"].write(_dumps({"split": name, "pos": pos,
                                                  "changed_by": self.changed_by.pop(conv.id, []),
                                                  "pii": self.pii.per_record.pop(conv.id, {}),
                                                  "record": conv.to_dict()}))
        self.files["spool"].close()
        self._pass_two()

    def _pass_two(self) -> None:
        splits: dict[str, tuple[str, int]] = {}  # id → (split, input position), while in flight

        def records() -> Iterator[Conversation]:
            with open(self.spool_path, encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    conv = Conversation.from_dict(row["record"])
                    splits[conv.id] = (row["split"], row["pos"])
                    if row["changed_by"]:
                        self.changed_by[conv.id] = row["changed_by"]
                    if row["pii"]:
                        self.pii.per_record[conv.id] = row["pii"]
                    yield self._remember(conv)

        stream: Iterable[Conversation] = records()
        if self.decontam_index is not None and self.decontam_runner is not None:
            stream = self.route("decontam", self.decontam_runner(self.spool_path, stream,
                                                                 self.decontam_index))
        elif self.decontam_index is not None:
            stream = self.route("decontam", decontaminate(stream, self.decontam_index))
        else:
            stream = self.through("decontam", stream)
        if self._llm_on("extract_qa"):  # pairs follow their transcript, keeping its split
            stream = self.route("extract_qa", self._inherit_split(
                splits, self._llm_stage("extract_qa", stream)))
        else:
            stream = self.through("extract_qa", stream)
        if self._llm_on("rewrite"):
            stream = self.route("rewrite", self._mark_changed(
                "rewrite", self._llm_stage("rewrite", stream)))
        else:
            stream = self.through("rewrite", stream)
        for name in ("train.jsonl", "val.jsonl"):
            self.files[name] = open(self.out_dir / name, "w", encoding="utf-8", newline="\n")
        if self._llm_on("preferences"):  # train records only; the rest keep their place
            pref_file = open(self.out_dir / "preferences.jsonl", "w", encoding="utf-8", newline="\n")
            self.files["preferences.jsonl"] = pref_file

            def write(conv_id: str, row: dict[str, Any]) -> None:
                pref_file.write(_dumps(self._generated(row, "preferences.jsonl", conv_id,
                                                       row["non_preferred_output"])))

            stream = self._llm_stage("preferences", stream, writer=write,  # type: ignore[assignment]
                                     select=lambda conv: splits[conv.id][0] == "train")
        for conv in stream:
            self._keep(conv, *splits.pop(conv.id))
        for conv_id in splits:  # rejected in pass 2 (decontam): no lineage entry
            self.changed_by.pop(conv_id, None)
            self.pii.per_record.pop(conv_id, None)
        self._write_lineage()

    @staticmethod
    def _inherit_split(splits: dict[str, tuple[str, int]],
                       stream: Iterable[Conversation | Reject]) -> Iterator[Conversation | Reject]:
        """Extracted Q/A pairs get their transcript's split and input position (the transcript
        comes just before its pairs; it may already be written when they arrive)."""
        recent: OrderedDict[str, tuple[str, int]] = OrderedDict()
        for item in stream:
            # a transcript replaced by its pairs (keep_source off) comes as its reject
            source = item.record_id if isinstance(item, Reject) else item.id
            if source is not None and source in splits:
                recent[source] = splits[source]
                if len(recent) > 256:
                    recent.popitem(last=False)
            elif isinstance(item, Conversation):
                parent = item.meta.get("extracted_from")
                if parent in recent:
                    splits[item.id] = recent[parent]
            yield item

    def _mark_changed(self, stage: str, stream: Iterable[Conversation]) -> Iterator[Conversation]:
        for conv in stream:
            before = self._recent.get(conv.id)
            if before is not None and before.messages != conv.messages:
                self.changed_by[conv.id].append(stage)
            yield conv

    def _generated(self, row: dict[str, Any], file: str, record_id: str,
                   parts: list[dict[str, Any]]) -> dict[str, Any]:
        """A row with text a local model wrote (each part's "content" or "reason"): redacted like
        the records (the model may echo or invent personal data), then scanned by the leak gate."""
        texts = []
        for part in parts:
            key = "content" if "content" in part else "reason"
            if isinstance(part.get(key), str) and part[key]:
                part[key] = pii.redact_text(part[key], self.spec.pii)[0]
                texts.append(part[key])
        self.residual.add_generated(record_id, file, texts)
        return row

    def _keep(self, conv: Conversation, split: str, pos: int) -> None:
        """Write a surviving record to its split and its lineage entry to its pass's spool."""
        self.splits[split] += 1
        self.per_file[self._input_label(conv.source.file)]["kept"] += 1
        record = conv.to_dict()
        self.files[f"{split}.jsonl"].write(_dumps(record))
        self.residual.add(conv)
        if self._length_of is not None:
            self.lengths.append(min(self._length_of(conv), 2**32 - 1))
        self.files["lineage_eval" if split == "eval" else "lineage_rest"].write(_dumps({
            "pos": pos, "id": conv.id, "source": record["source"], "split": split,
            "stages": list(STAGES), "changed_by": self.changed_by.pop(conv.id, []),
            "pii": self.pii.per_record.pop(conv.id, {}),
        }))

    def _write_lineage(self) -> None:
        """lineage.jsonl in input order: the two spools merged by position, duplicates added."""
        for key in self.lineage_paths:
            self.files[f"lineage_{key}"].close()

        def entries(path: Path) -> Iterator[dict[str, Any]]:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)

        with open(self.out_dir / "lineage.jsonl", "w", encoding="utf-8", newline="\n") as out:
            for entry in heapq.merge(*(entries(p) for p in self.lineage_paths.values()),
                                     key=lambda e: e["pos"]):
                del entry["pos"]
                entry["duplicates"] = self.clusters.get(entry["id"], [])
                out.write(_dumps(entry))

    # -- lengths for the card's histogram ---------------------------------------------------
    def _setup_lengths(self) -> None:
        """Token counts with the pipeline's (or the LLM stages') tokenizer, else characters."""
        name = None
        if self.cfg.model is not None:
            name = self.cfg.model.name
        elif self.spec.llm.model:
            name = self.spec.llm.model
        tokenizer = None
        if name:
            row = self.registry.get_model(name)
            if row is not None:
                try:
                    from transformers import AutoTokenizer

                    tokenizer = AutoTokenizer.from_pretrained(row["path"], local_files_only=True)
                except (OSError, ValueError):
                    tokenizer = None
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            def tokens(conv: Conversation) -> int:
                text = tokenizer.apply_chat_template(conv.messages, tokenize=False)
                return len(tokenizer(text, add_special_tokens=False)["input_ids"])

            self._length_of, self.length_unit = tokens, "tokens"
        else:
            self._length_of = lambda conv: sum(len(m["content"]) for m in conv.messages)
            self.length_unit = "characters"

    # -- summary ----------------------------------------------------------------------------
    def stage_summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for stage in STAGES:
            c = self.stage_counts[stage]
            out[stage] = {"in": c["out"] + c["rejected"], "out": c["out"], "rejected": c["rejected"]}
        for key, n in sorted(self.events.items()):
            stage, _, event = key.partition(".")
            if stage in out and n:
                out[stage][event] = n
        off = {"judge": not self._llm_on("judge"), "extract_qa": not self._llm_on("extract_qa"),
               "rewrite": not self._llm_on("rewrite"), "decontam": self.decontam_index is None,
               "dedup": not (self.spec.dedup.exact or self.spec.dedup.near)}
        for stage, skipped in off.items():
            if skipped:
                out[stage]["skipped"] = True
        out["pii"]["records_redacted"] = self.pii.records_redacted
        out["dedup"]["clusters"] = len(self.clusters)
        for stage, stats in self.llm.items():
            for event, n in sorted(stats.items()):
                out.setdefault(stage, {})[event] = n
        if self.decontam_index is not None:
            out["decontam"]["eval_items_indexed"] = len(self.decontam_index)
        return out

    def counts(self) -> dict[str, int]:
        ingest = self.stage_counts["ingest"]
        rejected = sum(sum(c.values()) for c in self.rejects_by_stage.values())
        return {"input_records": ingest["out"] + ingest["rejected"], "rejected": rejected,
                **{s: self.splits[s] for s in SPLITS}}


