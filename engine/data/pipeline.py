"""Data Refiner pipeline: runs the refine stages and writes, hashes and registers one dataset version.

Stages: ingest → system prompt → normalize → pii → quality → dedup → split.

A version directory <tenant>/datasets/<name>/v<N>/ holds:
  train.jsonl val.jsonl eval.jsonl  one Conversation.to_dict() per line, in input order
  rejects.jsonl                     one Reject.to_dict() per line (codes, counts and ids only)
  lineage.jsonl                     per surviving record: id, source, split, stages, changed_by,
                                    pii counts, ids of the duplicates it absorbed
  card.json                         counts per stage / input file / reject reason / PII type,
                                    split sizes, input and output sha256, config sha256, seed, times
Everything is written into a hidden sibling directory that is renamed into place at the very end
and only then registered, so a failure or Ctrl-C leaves neither a half-written version nor a
registry row. Same config + seed + input → byte-identical train/val/eval/rejects/lineage files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from engine.config import InputSpec, RefineSpec, StudioConfig
from engine.data.ingest.csv_tickets import check_columns, delimiter_for, read_csv_tickets
from engine.data.ingest.openai_jsonl import check_readable, read_openai_jsonl
from engine.data.stages.dedup import dedup
from engine.data.stages.normalize import normalize_conversation
from engine.data.stages.pii import PiiStats, redact
from engine.data.stages.quality import gate
from engine.data.stages.split import SPLITS, split
from engine.errors import StudioError
from engine.hashing import file_manifest, sha256_file, sha256_json
from engine.records import Conversation, Reject
from engine.registry import Registry, now_iso
from engine.workspace import Workspace, check_name

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)

CARD_SCHEMA = 1
STAGES = ("ingest", "system_prompt", "normalize", "pii", "quality", "dedup", "split")
OUTPUT_FILES = ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl")
_PROGRESS_BATCH = 256


@dataclass
class RefineResult:
    tenant: str
    name: str
    version: int
    path: Path
    counts: dict[str, Any]
    sha256: str

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


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


def prepare_inputs(cfg: StudioConfig, spec: RefineSpec) -> list[InputFile]:
    """Resolve, check (readable UTF-8, CSV header has the mapped columns) and hash every input."""
    out: list[InputFile] = []
    seen: Counter[str] = Counter()
    for inp in spec.inputs:
        path = cfg.resolve_path(inp.path)
        if inp.format == "csv_tickets":
            check_columns(path, inp)  # also checks the file opens and starts as UTF-8
        else:
            check_readable(path)
        seen[path.name] += 1
        label = path.name if seen[path.name] == 1 else f"{path.name}#{seen[path.name]}"
        digest, lines = scan_file(path)
        out.append(InputFile(spec=inp, path=path, label=label, sha256=digest, lines=lines))
    return out


def add_system_prompt(records: Iterable[Conversation], prompt: str | None,
                      added: Callable[[str], None] | None = None) -> Iterator[Conversation]:
    """Insert `prompt` as the first message of every conversation that has no system message."""
    for conv in records:
        if prompt and not any(m["role"] == "system" for m in conv.messages):
            conv = replace(conv, messages=[{"role": "system", "content": prompt}, *conv.messages])
            if added is not None:
                added(conv.id)
        yield conv


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


@dataclass
class _Run:
    """State of one refine: output files, counters and per-record lineage notes."""

    spec: RefineSpec
    seed: int
    files: dict[str, IO[str]]
    progress: "Progress | None" = None
    stage_counts: dict[str, Counter] = field(default_factory=lambda: {s: Counter() for s in STAGES})
    rejects_by_stage: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    per_file: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    changed_by: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    clusters: dict[str, list[str]] = field(default_factory=dict)
    pii: PiiStats = field(default_factory=PiiStats)
    turns_dropped: int = 0
    system_prompts_added: int = 0
    lineage: list[dict[str, Any]] = field(default_factory=list)
    splits: Counter = field(default_factory=Counter)

    # -- plumbing ---------------------------------------------------------------------------
    def reject(self, item: Reject) -> None:
        self.files["rejects.jsonl"].write(_dumps(item.to_dict()))
        self.rejects_by_stage[item.stage][item.reason] += 1
        self.per_file[item.source.file]["rejected"] += 1
        if item.record_id is not None:
            self.changed_by.pop(item.record_id, None)

    def route(self, stage: str, stream: Iterable[Conversation | Reject]) -> Iterator[Conversation]:
        """Count what passes `stage`, write its rejects, pass conversations on."""
        counts = self.stage_counts[stage]
        for item in stream:
            if isinstance(item, Reject):
                counts["rejected"] += 1
                self.reject(item)
            else:
                counts["out"] += 1
                yield item

    def system_prompt_added(self, record_id: str) -> None:
        self.system_prompts_added += 1
        self.changed_by[record_id].append("system_prompt")

    # -- stages -----------------------------------------------------------------------------
    def ingest(self, inputs: list[InputFile]) -> Iterator[Conversation | Reject]:
        for inp in inputs:
            task = (self.progress.add_task(f"refine {inp.label}", total=inp.lines)
                    if self.progress is not None else None)
            advance = _Advancer(self.progress, task)
            if inp.spec.format == "openai_jsonl":
                reader = read_openai_jsonl(inp.path, label=inp.label, advance=advance)
            else:
                reader = read_csv_tickets(inp.path, inp.spec, label=inp.label, advance=advance)
            for item in reader:
                if isinstance(item, Conversation):
                    self.per_file[inp.label]["records"] += 1
                yield item
            advance.flush()
            if self.progress is not None and task is not None:
                self.progress.update(task, completed=inp.lines)

    def normalize(self, stream: Iterable[Conversation]) -> Iterator[Conversation]:
        for conv in stream:
            out, dropped = normalize_conversation(conv, self.spec.normalize)
            self.turns_dropped += dropped
            if out.messages != conv.messages:
                self.changed_by[conv.id].append("normalize")
            yield out

    def pii_stage(self, stream: Iterable[Conversation]) -> Iterator[Conversation]:
        for conv in redact(stream, self.spec.pii, self.pii):
            if conv.id in self.pii.per_record:
                self.changed_by[conv.id].append("pii")
            yield conv

    def run(self, inputs: list[InputFile]) -> None:
        spec = self.spec
        stream = self.route("ingest", self.ingest(inputs))
        stream = self.route("system_prompt",
                            add_system_prompt(stream, spec.system_prompt, self.system_prompt_added))
        stream = self.route("normalize", self.normalize(stream))
        stream = self.route("pii", self.pii_stage(stream))
        stream = self.route("quality", gate(stream, spec.quality.min_turns))
        stream = self.route("dedup", dedup(stream, spec.dedup, self.clusters))
        for name, conv in split(stream, self.seed, spec.split):
            self.stage_counts["split"]["out"] += 1
            self.splits[name] += 1
            self.per_file[conv.source.file]["kept"] += 1
            self.files[f"{name}.jsonl"].write(_dumps(conv.to_dict()))
            self.lineage.append({
                "id": conv.id,
                "source": conv.to_dict()["source"],
                "split": name,
                "stages": list(STAGES),
                "changed_by": self.changed_by.pop(conv.id, []),
                "pii": self.pii.per_record.get(conv.id, {}),
            })
        for entry in self.lineage:  # duplicates are known only once every record has been seen
            entry["duplicates"] = self.clusters.get(entry["id"], [])
            self.files["lineage.jsonl"].write(_dumps(entry))

    # -- summary ----------------------------------------------------------------------------
    def stage_summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for stage in STAGES:
            c = self.stage_counts[stage]
            out[stage] = {"in": c["out"] + c["rejected"], "out": c["out"], "rejected": c["rejected"]}
        out["system_prompt"]["added"] = self.system_prompts_added
        out["normalize"]["turns_dropped"] = self.turns_dropped
        out["pii"]["records_redacted"] = self.pii.records_redacted
        out["dedup"]["clusters"] = len(self.clusters)
        return out

    def counts(self) -> dict[str, int]:
        ingest = self.stage_counts["ingest"]
        rejected = sum(sum(c.values()) for c in self.rejects_by_stage.values())
        return {"input_records": ingest["out"] + ingest["rejected"], "rejected": rejected,
                **{s: self.splits[s] for s in SPLITS}}


def _card(run: _Run, cfg: StudioConfig, spec: RefineSpec, inputs: list[InputFile], tenant: str,
          version: int, started: str, outputs: dict[str, str]) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    for c in run.rejects_by_stage.values():
        reasons.update(c)
    return {
        "schema": CARD_SCHEMA,
        "tenant": tenant,
        "dataset": spec.dataset,
        "version": version,
        "created_at": now_iso(),
        "ingest_started_at": started,
        "seed": cfg.seed,
        "refine_config_sha256": sha256_json(spec.model_dump(mode="json")),
        "refine_config": spec.model_dump(mode="json"),
        "counts": run.counts(),
        "inputs": [
            {"file": inp.label, "format": inp.spec.format, "sha256": inp.sha256, "lines": inp.lines,
             "delimiter": (delimiter_for(inp.path, inp.spec) if inp.spec.format == "csv_tickets"
                           else None),
             "records": run.per_file[inp.label]["records"],
             "rejected": run.per_file[inp.label]["rejected"],
             "kept": run.per_file[inp.label]["kept"]}
            for inp in inputs
        ],
        "stages": run.stage_summary(),
        "rejects": dict(sorted(reasons.items())),
        "rejects_by_stage": {s: dict(sorted(c.items())) for s, c in sorted(run.rejects_by_stage.items())},
        "pii": {k: run.pii.totals.get(k, 0) for k in ("email", "phone", "card")},
        "splits": {s: run.splits[s] for s in SPLITS},
        "outputs": outputs,
    }


def _free_version(registry: Registry, ws: Workspace, tenant: str, name: str) -> int:
    """The registry's next version, skipping any directory left behind by a hard kill."""
    version = registry.next_dataset_version(tenant, name)
    while ws.dataset_dir(tenant, name, version).exists():
        version += 1
    return version


def refine(cfg: StudioConfig, ws: Workspace, registry: Registry,
           progress: "Progress | None" = None) -> RefineResult:
    """Run the refine stage of `cfg` and register the new dataset version."""
    spec = cfg.refine
    if spec is None:
        raise StudioError("this config has no 'refine' section", where=str(cfg.path or "<config>"),
                          hint="add a 'refine:' section, or use kind: refine")
    tenant, name = cfg.tenant, check_name(spec.dataset, "dataset")
    started = now_iso()
    inputs = prepare_inputs(cfg, spec)  # fails fast, before anything is written

    parent = ws.dataset_dir(tenant, name, 1).parent
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = parent / f".partial-{uuid.uuid4().hex[:12]}"
    final: Path | None = None
    try:
        tmp.mkdir(mode=0o700)
        with ExitStack() as stack:
            files = {f: stack.enter_context(open(tmp / f, "w", encoding="utf-8", newline="\n"))
                     for f in OUTPUT_FILES}
            run = _Run(spec=spec, seed=cfg.seed, files=files, progress=progress)
            run.run(inputs)
        outputs = {f: sha256_file(tmp / f) for f in OUTPUT_FILES}
        for _attempt in range(5):
            version = _free_version(registry, ws, tenant, name)
            card = _card(run, cfg, spec, inputs, tenant, version, started, outputs)
            (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True,
                                                      ensure_ascii=False) + "\n", encoding="utf-8")
            target = ws.dataset_dir(tenant, name, version)
            try:
                os.rename(tmp, target)
            except OSError:
                if target.exists():  # another refine took this version meanwhile
                    continue
                raise
            final = target
            break
        else:
            raise StudioError(f"could not claim a version directory for dataset {name!r}",
                              hint="another refine of this dataset may be running; retry")
        digest = sha256_json(file_manifest(final))
        counts = run.counts()
        registry.put_dataset(tenant, name, version, final, digest, counts, started)
    except BaseException:
        shutil.rmtree(final if final is not None else tmp, ignore_errors=True)
        raise
    log.info("refined dataset %s@v%d: %d records in, %d rejected, train %d, val %d, eval %d",
             name, version, counts["input_records"], counts["rejected"], counts["train"],
             counts["val"], counts["eval"])
    return RefineResult(tenant=tenant, name=name, version=version, path=final, counts=counts,
                        sha256=digest)


# ------------------------------------------------------------------------------ dataset refs
_REF = re.compile(r"^(?P<name>[^@\s]+)(?:@(?:[vV]?(?P<version>\d+)|(?P<latest>latest)))?$")


def parse_dataset_ref(ref: str) -> tuple[str, int | None]:
    """'name' or 'name@latest' → (name, None); 'name@v3' or 'name@3' → (name, 3)."""
    m = _REF.match((ref or "").strip())
    if not m:
        raise StudioError(f"invalid dataset reference {ref!r}",
                          hint="use 'name' (latest version), 'name@vN' or 'name@N'")
    version = m.group("version")
    return m.group("name"), (int(version) if version is not None else None)


def resolve_dataset(registry: Registry, tenant: str, ref: str) -> dict[str, Any]:
    """The registry row of a dataset version; StudioError listing what exists when not found."""
    name, version = parse_dataset_ref(ref)
    row = registry.get_dataset(tenant, name, version)
    if row is not None:
        return row
    rows = registry.list_datasets(tenant)
    versions = [r["version"] for r in rows if r["name"] == name]
    if versions:
        hint = (f"available versions of {name!r}: {', '.join(f'v{v}' for v in sorted(versions))}"
                f" (or '{name}' for the latest)")
    elif rows:
        names = sorted({r["name"] for r in rows})
        hint = f"datasets in tenant {tenant!r}: {', '.join(names)}"
    else:
        hint = f"tenant {tenant!r} has no datasets yet; run `studio refine CONFIG` first"
    raise StudioError(f"dataset {ref!r} not found in tenant {tenant!r}", hint=hint)
