"""The Data Refiner's entry point: `refine()` runs the stages and writes, hashes and registers one version.

Helpers: refine_passes.py (the two streaming passes between the raw inputs and the files),
record_workers.py (the per-record stages, in one or `refine.workers` processes), card.py (the
data card), vault.py (the encrypted PII mapping). Dataset references ('name@vN') resolve through
engine/registry.py.

Stages, in order (STAGES):
  ingest        one reader per input format (engine/data/ingest/), rejects with line numbers
  system_prompt added where a conversation has none
  normalize     unicode, HTML, mojibake, whitespace
  turns         bot/tool turns, signatures, quoted replies, boilerplate, merging (stages/turns.py)
  quality       turn/length bounds, garbage, repetition, language
  pii           detection per record, consistent surrogates across the whole refine (stages/pii.py)
  dedup         exact and MinHash near-duplicates; first occurrence survives
  judge         optional: a local model scores each sample 1–5 (stages/llm/)
  split         train/val/eval by a hash of (seed, id)
  decontam      train/val records too close to an eval item (or a `decontam.against` file)
  rewrite       optional: final assistant turn rewritten in the house style (train/val)
normalize → quality (and PII detection) run per record, in `refine.workers` processes when > 1
(engine/data/record_workers.py), or as datatrove tasks over shards with `refine.executor:
datatrove` (engine/data/refine_datatrove.py, same bytes); the rest runs here, streaming. Train/val records wait in a spool
file until every eval item is known (decontamination needs the whole eval split); lineage entries
wait in another, so memory stays bounded by the dedup index, not by the corpus.

A version directory <tenant>/datasets/<name>/v<N>/ holds:
  train.jsonl val.jsonl eval.jsonl  one Conversation.to_dict() per line, in input order
  rejects.jsonl                     one Reject.to_dict() per line (codes, counts and ids only)
  lineage.jsonl                     per surviving record: id, source, split, stages, changed_by,
                                    pii counts, ids of the duplicates it absorbed
  card.json, card.html              counts per stage / input / reason / PII type, PII residuals,
                                    lengths, hashes
  preferences.jsonl, judge.jsonl    when the LLM stages are on
  pii_vault.enc                     with pii.vault: encrypted (engine/data/vault.py)
Everything is written into a hidden sibling directory that is renamed into place at the very end
and only then registered, so a failure or Ctrl-C leaves neither a half-written version nor a
registry row. Before that, the PII leak gate: every record written to train/val/eval went through
a residual scan (stages/pii_residual.py, all detectors on); a type found more often than
`pii.max_residual` allows fails the refine with PiiLeak (exit 3), leaving nothing behind.
Same config + seed + input → byte-identical train/val/eval/rejects/lineage files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.data.card import build_card, write_card
from engine.data.ingest import check_input, input_files
from engine.data.refine_passes import OUTPUT_FILES, STAGES, InputFile, RefineRun, scan_file
from engine.data.stages import pii
from engine.data.vault import load_key, vault_aad, write_vault
from engine.errors import DiskFull, StudioError, disk_full
from engine.hashing import file_manifest, sha256_file, sha256_json
from engine.registry import Registry, now_iso
from engine.workspace import Workspace, check_name

if TYPE_CHECKING:
    from rich.progress import Progress

    from engine.config import RefineSpec, StudioConfig

__all__ = ["STAGES", "OUTPUT_FILES", "RefineResult", "refine"]

log = logging.getLogger(__name__)


@dataclass
class RefineResult:
    tenant: str
    name: str
    version: int
    path: Path
    counts: dict[str, Any]
    sha256: str
    pii_residual: dict[str, dict[str, Any]] = field(default_factory=dict)  # the card's section

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


def prepare_inputs(cfg: "StudioConfig", spec: "RefineSpec") -> list[InputFile]:
    """Resolve, check (readable, right shape for its format) and hash every input."""
    out: list[InputFile] = []
    seen: Counter[str] = Counter()
    for inp in spec.inputs:
        path = cfg.resolve_path(inp.path)
        check_input(path, inp)
        seen[path.name] += 1
        label = path.name if seen[path.name] == 1 else f"{path.name}#{seen[path.name]}"
        files = input_files(path, inp)
        if len(files) == 1 and files[0] == path:
            digest, lines = scan_file(path)
        else:  # a directory: hash of the (name, sha256) list, lines summed
            h, lines = hashlib.sha256(), 0
            for f in files:
                d, n = scan_file(f)
                h.update(f"{f.name}\0{d}\n".encode())
                lines += n
            digest = h.hexdigest()
        out.append(InputFile(spec=inp, path=path, label=label, sha256=digest, lines=lines))
    return out


def _free_version(registry: Registry, ws: Workspace, tenant: str, name: str) -> int:
    """The registry's next version, skipping any directory left behind by a hard kill."""
    version = registry.next_dataset_version(tenant, name)
    while ws.dataset_dir(tenant, name, version).exists():
        version += 1
    return version


def refine(cfg: "StudioConfig", ws: Workspace, registry: Registry,
           progress: "Progress | None" = None) -> RefineResult:
    """Run the refine stage of `cfg` and register the new dataset version."""
    spec = cfg.refine
    if spec is None:
        raise StudioError("this config has no 'refine' section", where=str(cfg.path or "<config>"),
                          hint="add a 'refine:' section, or use kind: refine")
    tenant, name = cfg.tenant, check_name(spec.dataset, "dataset")
    started = now_iso()
    inputs = prepare_inputs(cfg, spec)  # fails fast, before anything is written
    vault_key = None
    if spec.pii.vault == "encrypted":
        vault_key = load_key(spec.pii)  # a missing key stops here, before any work

    job = None
    if spec.executor == "datatrove":  # the per-record stages as datatrove tasks
        # lazy: datatrove is the optional `distributed` extra
        from engine.data.refine_datatrove import DatatroveJob

        job = DatatroveJob(cfg, spec, ws, inputs, registry)  # an unwired executor stops here

    parent = ws.dataset_dir(tenant, name, 1).parent
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = parent / f".partial-{uuid.uuid4().hex[:12]}"
    final: Path | None = None
    try:
        tmp.mkdir(mode=0o700)
        run = RefineRun(cfg=cfg, spec=spec, ws=ws, registry=registry, out_dir=tmp,
                        progress=progress)
        if job is not None:
            run.record_runner, job.progress = job.open().outcomes, progress
            run.surrogates = pii.Surrogates.for_spec(spec.pii, ids=job.surrogate_ids)  # on disk
            run.runner_ingests, job.note = True, run.note_ingested  # ingest runs on the tasks
            run.dedup_runner = job.decider  # None: the in-process dedup (datatrove.dedup: driver)
            if job.decontam_on:
                run.decontam_runner = job.decontam
                run.eval_index_factory = job.eval_index
            if job.models:  # the LLM stages on the tasks, a model per worker
                run.llm_runner = job.llm
        try:
            run.run(inputs)
        finally:
            run.close()
        run.residual.check()  # the PII leak gate: PiiLeak (exit 3) before a version is claimed
        outputs = {f: sha256_file(tmp / f) for f in run.output_files()}
        for _attempt in range(5):
            version = _free_version(registry, ws, tenant, name)
            card = build_card(run, cfg, spec, inputs, tenant, version, started, outputs)
            write_card(tmp, card, run)
            if vault_key is not None:
                write_vault(tmp / "pii_vault.enc", run.surrogates.mapping, vault_key,
                            vault_aad(name, version, tenant))
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
    except BaseException as exc:
        if job is not None:
            job.close(succeeded=False)  # kept for a resume unless skip_completed is off
        shutil.rmtree(final if final is not None else tmp, ignore_errors=True)
        if disk_full(exc):  # one message, not a traceback: the machine's condition, not a bug
            raise DiskFull.from_os_error(exc, f"dataset {name}", where=str(parent),
                                         kept="nothing of this version was kept") from exc
        raise
    if job is not None:
        job.close(succeeded=True)
    log.info("refined dataset %s@v%d: %d records in, %d rejected, train %d, val %d, eval %d",
             name, version, counts["input_records"], counts["rejected"], counts["train"],
             counts["val"], counts["eval"])
    return RefineResult(tenant=tenant, name=name, version=version, path=final, counts=counts,
                        sha256=digest, pii_residual=card["pii_residual"])
