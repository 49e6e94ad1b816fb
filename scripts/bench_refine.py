#!/usr/bin/env python3
"""Benchmark: throughput of every non-LLM refine stage, the whole refine, MinHash, and peak memory.

What it measures, in ONE run on a corpus generated here (scripts/make_noisy_data.py --scale:
five raw formats, junk, duplicates, near-duplicates, PII, eval contamination):

1. stages   — records/s and MB/s (UTF-8 bytes of the message texts a stage receives; raw file
   bytes for ingest) of each per-record stage, one process, so the numbers are per core. The
   records stream through the chain ingest → normalize → turns → quality → pii → dedup →
   decontam → split in chunks (memory stays bounded); each stage's time is its own calls only.
   The stage list is the STAGES table below; a stage whose module or function is missing is
   reported as a skip, not a crash.
2. pipeline — `engine.data.refine.refine` (the code path of `studio refine`) on a refine config
   built here, in a fresh subprocess per size: records/s, MB/s (raw input bytes) and the peak RSS
   of that process, at M and 10·M conversations (M = --rss-base, default N/10, so 10·M = N):
   memory that stays flat from M to 10·M shows the pipeline streams. With --executor datatrove,
   the largest size runs again with `refine.executor: datatrove` (--tasks shards, --workers at
   once) and the report gives its time over the local run's (same size, same run) and whether
   the two wrote the same bytes (sha256 of train/val/eval/rejects/lineage), file by file, the
   share of records with the same dedup decision, and each datatrove phase's worker peak RSS
   (the `peak_rss_mb` stat of its tasks). With --llm MODEL (a `studio models import` reference,
   e.g. builtin:smollm2-135m-instruct), every refine also runs the LLM judge and preference
   stages on that model (judge.jsonl and preferences.jsonl join the compared files): with
   --executor datatrove, a model per task against one in the driver. Then only the largest size
   runs (N = 10·M), without the memory check at M.
3. minhash  — the dedup stage's signatures (engine.data.stages.dedup.minhash_signatures) against
   two references on the same conversations in the same process: datasketch used the textbook
   way (one MinHash per text, `update()` per shingle, the same character 5-shingles with the
   customer's counted `user_weight` times) and datatrove's MinhashDedupSignature
   (get_shingles + get_signature, word 5-grams, 128 hashes). Ratio = engine / reference.

Everything happens in a temporary directory (data, workspace, caches) removed at the end;
offline, no network. A benchmark, never part of the test suite. The last line is one JSON object.

    python scripts/bench_refine.py                  # N = 100000 (several minutes on 1-2 cores)
    python scripts/bench_refine.py --quick          # N = 5000, a smoke run
    python scripts/bench_refine.py --conversations 20000 --rss-base 2000
    python scripts/bench_refine.py --conversations 20000 --executor datatrove --tasks 4 --skip-stages
    python scripts/bench_refine.py --conversations 300 --rss-base 30 --skip-stages \
        --executor datatrove --tasks 4 --workers 2 --llm builtin:smollm2-135m-instruct
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import offline  # noqa: E402  (stdlib-only module)

offline.enforce()

import argparse  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

CHUNK = 2048
MINHASH_SAMPLE = 20_000  # conversations signed by the engine's signer
REFERENCE_SAMPLE = 2_000  # of those, signed by every implementation (the references are slow)


def load_generator() -> Any:
    """scripts/make_noisy_data.py, imported by path."""
    spec = importlib.util.spec_from_file_location("make_noisy_data",
                                                  Path(__file__).with_name("make_noisy_data.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_noisy_data"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


LLM_MODEL = "bench-llm"  # the store name --llm's model is imported under
LLM_STAGES = {"model": LLM_MODEL, "batch_size": 8, "max_new_tokens": 32,
              "judge": {"enabled": True, "threshold": 1.5}, "preferences": {"enabled": True}}


def refine_config(data: Path, conversations: int, workers: int = 1, executor: str = "local",
                  tasks: int = 1, logging_dir: Path | None = None,
                  llm: bool = False) -> dict[str, Any]:
    """The refine config (as YAML data) for a corpus written by make_noisy_data into `data`;
    datatrove's logs (and the per-worker peak RSS in their stats) go to `logging_dir`; with
    `llm`, the LLM judge and preference stages on LLM_MODEL."""
    speakers = {"user": ["customer", "visitor"], "assistant": ["agent"], "bot": ["bot"],
                "tool": ["tool"]}
    run: dict[str, Any] = {"workers": workers}
    if executor == "datatrove":  # the same workers, as datatrove's (tasks at once)
        run = {"executor": "datatrove", "datatrove": {"tasks": tasks, "workers": workers}}
        if logging_dir is not None:
            run["datatrove"]["logging_dir"] = str(logging_dir)
    return {"kind": "refine", "tenant": "bench", "seed": 42, "refine": {
        "dataset": f"bench-{conversations}-w{workers}-{executor}{tasks}",
        **run,
        "system_prompt": "You are the Brightwave Home support assistant.",
        "inputs": [
            {"path": str(data / "tickets.csv"), "format": "csv_tickets", "speakers": speakers,
             "columns": {"id": "ticket_id", "transcript": "transcript",
                         "customer_name": "customer_name", "meta": ["channel", "product"]}},
            {"path": str(data / "chat_widget.jsonl"), "format": "json_chat", "speakers": speakers,
             "fields": {"id": "conversation.ref", "turns": "events", "speaker": "author.type",
                        "text": "body.html", "customer_name": "conversation.visitor.name",
                        "meta": ["conversation.channel", "conversation.product"]}},
            {"path": str(data / "support_mail.mbox"), "format": "email",
             "speakers": {"assistant": ["@brightwave-home.example", "Brightwave Support"]}},
            {"path": str(data / "call_transcripts.txt"), "format": "transcript",
             "speakers": speakers},
            {"path": str(data / "helpdesk_export.jsonl"), "format": "openai_jsonl"},
        ],
        "quality": {"languages": ["en"]},
        "decontam": {"against": [str(data / "eval_items.jsonl")]},
        **({"llm": LLM_STAGES} if llm else {}),
    }}


def parse(cfg_data: dict[str, Any]) -> Any:
    import yaml

    from engine.config import parse_config

    return parse_config(yaml.safe_dump(cfg_data, sort_keys=False), file="<bench>")


# ------------------------------------------------------------------------------ stage table
class Skip(Exception):
    """A stage this checkout does not have (yet): reported, not fatal."""


def _attr(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise Skip(f"{module}.{name} not available ({exc.__class__.__name__})") from None


def _normalize(spec: Any, ctx: dict[str, Any]) -> Callable[[Any], Any]:
    f = _attr("engine.data.stages.normalize", "normalize_conversation")
    return lambda c: f(c, spec.normalize)[0]


def _turns(spec: Any, ctx: dict[str, Any]) -> Callable[[Any], Any]:
    f = _attr("engine.data.stages.turns", "clean_turns")
    return lambda c: f(c, spec.turns)[0]


def _quality(spec: Any, ctx: dict[str, Any]) -> Callable[[Any], Any]:
    f = _attr("engine.data.stages.quality", "check")
    return lambda c: c if f(c, spec.quality) is None else None


def _pii(spec: Any, ctx: dict[str, Any]) -> Callable[[Any], Any]:
    detect = _attr("engine.data.stages.pii", "detect")
    surrogates = _attr("engine.data.stages.pii", "Surrogates").for_spec(spec.pii)
    return lambda c: surrogates.apply(c, detect(c, spec.pii))[0]


def _dedup(spec: Any, ctx: dict[str, Any]) -> Callable[[Any], Any]:
    deduper = _attr("engine.data.stages.dedup", "Deduper")(spec.dedup)
    conv_type = _attr("engine.records", "Conversation")
    return lambda c: (lambda r: r if isinstance(r, conv_type) else None)(deduper.push(c))


def _decontam(spec: Any, ctx: dict[str, Any]) -> Callable[[Any], Any]:
    index = _attr("engine.data.stages.decontam", "EvalIndex")(spec.decontam, spec.dedup)
    load = _attr("engine.data.stages.decontam", "load_against")
    index.add_all(load([ctx["resolve"](p) for p in spec.decontam.against]))
    return lambda c: c if index.check(c) is None else None


def _split(spec: Any, ctx: dict[str, Any]) -> Callable[[Any], Any]:
    assign, seed = _attr("engine.data.stages.split", "assign"), ctx["seed"]
    return lambda c: (assign(c.id, seed, spec.split), c)[1]


# name → factory(spec, ctx) returning a per-record function: Conversation → Conversation | None
# (None: rejected). Order = the refine order; edit here to add a stage.
STAGES: list[tuple[str, Callable[[Any, dict[str, Any]], Callable[[Any], Any]]]] = [
    ("normalize", _normalize), ("turns", _turns), ("quality", _quality), ("pii", _pii),
    ("dedup", _dedup), ("decontam", _decontam), ("split", _split),
]


@dataclass
class Meter:
    name: str
    records: int = 0
    out: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: str = ""

    def row(self) -> dict[str, Any]:
        if self.skipped:
            return {"stage": self.name, "skipped": self.skipped}
        s = max(self.seconds, 1e-9)
        return {"stage": self.name, "records": self.records, "kept": self.out,
                "seconds": round(self.seconds, 3), "records_per_s": round(self.records / s, 1),
                "mb_per_s": round(self.bytes / s / 1e6, 3)}


def _text_bytes(conv: Any) -> int:
    return sum(len(m["content"].encode("utf-8")) for m in conv.messages)


def _chunks(it: Iterator[Any], meter: Meter, size: int) -> Iterator[list[Any]]:
    """Pull `size` items at a time from the ingest stream, timing the pulls."""
    while True:
        t0 = time.perf_counter()
        chunk = []
        for item in it:
            chunk.append(item)
            if len(chunk) >= size:
                break
        meter.seconds += time.perf_counter() - t0
        if not chunk:
            return
        meter.records += len(chunk)
        yield chunk


@dataclass
class StageRun:
    meters: list[Meter] = field(default_factory=list)
    sample: list[Any] = field(default_factory=list)  # post-turns conversations for MinHash


def run_stages(cfg: Any) -> StageRun:
    from engine.data.ingest import read_input
    from engine.records import Conversation

    spec = cfg.refine
    ingest = Meter("ingest")
    run = StageRun(meters=[ingest])
    fns: list[tuple[Meter, Callable[[Any], Any] | None]] = []
    for name, factory in STAGES:
        meter = Meter(name)
        try:
            fns.append((meter, factory(spec, {"seed": cfg.seed, "resolve": cfg.resolve_path})))
        except Skip as exc:
            meter.skipped = str(exc)
            fns.append((meter, None))
        run.meters.append(meter)

    def stream() -> Iterator[Any]:
        for inp in spec.inputs:
            path = cfg.resolve_path(inp.path)
            ingest.bytes += path.stat().st_size
            yield from read_input(path, inp, label=path.name)

    for chunk in _chunks(stream(), ingest, CHUNK):
        convs = [c for c in chunk if isinstance(c, Conversation)]
        ingest.out += len(convs)
        if spec.system_prompt:  # what the pipeline does between ingest and normalize
            for c in convs:
                if not any(m["role"] == "system" for m in c.messages):
                    c.messages = [{"role": "system", "content": spec.system_prompt}, *c.messages]
        for meter, fn in fns:
            if fn is None:
                continue
            meter.records += len(convs)
            meter.bytes += sum(_text_bytes(c) for c in convs)
            t0 = time.perf_counter()
            outs = [fn(c) for c in convs]
            meter.seconds += time.perf_counter() - t0
            convs = [c for c in outs if c is not None]
            meter.out += len(convs)
            if meter.name == "turns" and len(run.sample) < MINHASH_SAMPLE:
                run.sample.extend(convs[:MINHASH_SAMPLE - len(run.sample)])
    return run


# ----------------------------------------------------------------------------------- minhash
def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_minhash(sample: list[Any], dedup_spec: Any, tmp: Path) -> list[dict[str, Any]]:
    """Signatures per second: the engine's dedup signer and two references, same texts."""
    rows: list[dict[str, Any]] = []
    if not sample:
        return [{"impl": "engine", "skipped": "no conversations reached the dedup stage"}]
    try:
        sigs = _attr("engine.data.stages.dedup", "minhash_signatures")
        sides = _attr("engine.data.minhash", "sides")
    except Skip as exc:
        return [{"impl": "engine", "skipped": str(exc)}]
    k, w, perms = dedup_spec.shingle, dedup_spec.user_weight, dedup_spec.num_perm
    full_s = _time(lambda: sigs(sample, dedup_spec))
    full_bytes = sum(_text_bytes(c) for c in sample)
    rows.append({"impl": f"engine (dedup stage), all {len(sample)}", "records": len(sample),
                 "records_per_s": round(len(sample) / max(full_s, 1e-9), 1),
                 "mb_per_s": round(full_bytes / max(full_s, 1e-9) / 1e6, 3)})
    subset = sample[:REFERENCE_SAMPLE]
    pairs = [sides(c.messages) for c in subset]
    nbytes = sum(len(u.encode()) + len(a.encode()) for u, a in pairs)
    engine_s = _time(lambda: sigs(subset, dedup_spec))
    rows.append({"impl": "engine (dedup stage)", "seconds": engine_s})

    from datasketch import MinHash

    def datasketch_ref() -> None:
        for user, assistant in pairs:
            m = MinHash(num_perm=perms, seed=1)
            for i in range(max(1, len(user) - k + 1)):
                sh = user[i:i + k].encode()
                for copy in range(w):  # the customer's shingles count user_weight times
                    m.update(b"%d" % copy + sh)
            for i in range(max(1, len(assistant) - k + 1)):
                m.update(b"a" + assistant[i:i + k].encode())

    rows.append({"impl": "datasketch MinHash.update per shingle", "seconds": _time(datasketch_ref)})
    try:
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

        from engine.data.refine_datatrove_dedup import WhitespaceTokenizer

        step = MinhashDedupSignature(output_folder=str(tmp / "datatrove"),
                                     config=MinhashConfig(num_buckets=perms // 8, hashes_per_bucket=8),
                                     language=WhitespaceTokenizer())
        import xxhash

        # the installed xxhash takes bytes only; datatrove passes str: encode, same hash
        step._hash_func = lambda text: xxhash.xxh64_intdigest(text.encode("utf-8"))

        def datatrove_ref() -> None:
            for user, assistant in pairs:
                shingles = step.get_shingles(user + "\n" + assistant)
                if shingles.size:  # datatrove skips documents shorter than one n-gram
                    step.get_signature(shingles)

        rows.append({"impl": "datatrove MinhashDedupSignature (str.split words)",
                     "seconds": _time(datatrove_ref)})
    except Exception as exc:  # noqa: BLE001 - a reference that cannot run is reported, not fatal
        rows.append({"impl": "datatrove MinhashDedupSignature",
                     "skipped": f"{exc.__class__.__name__}: {str(exc)[:80]}"})
    for row in rows:
        if "seconds" in row and "records" not in row:
            s = max(row["seconds"], 1e-9)
            row.update(records=len(pairs), records_per_s=round(len(pairs) / s, 1),
                       mb_per_s=round(nbytes / s / 1e6, 3), seconds=round(s, 3),
                       engine_speedup=round(s / max(engine_s, 1e-9), 2))
    return rows


# ---------------------------------------------------------------------------------- pipeline
PHASES = {"ingest": "ingest", "records": "", "minhash-buckets": "minhash-buckets",
          "minhash-clusters": "minhash-clusters", "dedup-decisions": "dedup-decisions",
          "decontam": "decontam", "llm-judge": "llm-judge", "llm-extract_qa": "llm-extract_qa",
          "llm-rewrite": "llm-rewrite", "llm-preferences": "llm-preferences"}


def worker_peak_rss(logging_dir: Path) -> dict[str, dict[str, Any]]:
    """Per datatrove phase: the largest and the median peak RSS (MB) of its tasks' worker
    processes, from the `peak_rss_mb` stat every phase's last step records."""
    out: dict[str, dict[str, Any]] = {}
    for phase, sub in PHASES.items():
        peaks = []
        for f in sorted((logging_dir / sub / "stats").glob("*.json")):
            for step in json.loads(f.read_text(encoding="utf-8")):
                value = step.get("stats", {}).get("peak_rss_mb")
                if value is not None:
                    peaks.append(value["total"] if isinstance(value, dict) else value)
        if peaks:
            peaks.sort()
            out[phase] = {"tasks": len(peaks), "max_mb": peaks[-1],
                          "median_mb": peaks[len(peaks) // 2]}
    return out


def dedup_agreement(a: Path, b: Path) -> dict[str, Any]:
    """How two versions of one corpus agree: per output file, equal bytes; over the records
    that reached dedup in both, the share with the same decision (kept, or dropped as the same
    kind of duplicate of the same survivor)."""
    def decisions(version: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split in ("train", "val", "eval"):
            with open(version / f"{split}.jsonl", encoding="utf-8") as f:
                for line in f:
                    out[json.loads(line)["id"]] = None
        with open(version / "rejects.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                if r["stage"] == "dedup":
                    out[r["record_id"]] = (r["reason"], r["detail"].split()[2])
        return out

    da, db = decisions(a), decisions(b)
    both = da.keys() & db.keys()
    files = ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl")
    return {"same_file_bytes": {f: sha256_of(a / f) == sha256_of(b / f) for f in files},
            "records_at_dedup": len(both),
            "only_in_one": len(da.keys() ^ db.keys()),
            "dropped": [sum(v is not None for v in da.values()),
                        sum(v is not None for v in db.values())],
            "decision_agreement": round(sum(da[k] == db[k] for k in both) / max(len(both), 1), 6)}


def sha256_of(path: Path) -> str:
    from engine.hashing import sha256_file

    return sha256_file(path)


def child_main(cfg_file: str, workspace: str) -> None:
    """Run one refine (the `studio refine` code path) and print its numbers as JSON."""
    from engine.config import load_config
    from engine.data.refine import refine
    from engine.data.refine_passes import OPTIONAL_FILES, OUTPUT_FILES
    from engine.hashing import sha256_file, sha256_json
    from engine.registry import Registry
    from engine.workspace import Workspace

    cfg = load_config(cfg_file)
    ws = Workspace(workspace).ensure()
    nbytes = sum(cfg.resolve_path(i.path).stat().st_size for i in cfg.refine.inputs)
    t0 = time.perf_counter()
    with ws.job_tmp(cfg.tenant):
        res = refine(cfg, ws, Registry(ws.registry_path))
    took = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outputs = {name: sha256_file(res.path / name)
               for name in (*OUTPUT_FILES, *OPTIONAL_FILES) if (res.path / name).exists()}
    workers = (cfg.refine.datatrove.workers if cfg.refine.executor == "datatrove"
               else cfg.refine.workers)
    logs = cfg.refine.datatrove.logging_dir
    print(json.dumps({"seconds": took, "bytes": nbytes, "counts": res.counts,
                      "workers": workers, "executor": cfg.refine.executor,
                      "tasks": cfg.refine.datatrove.tasks, "outputs": sha256_json(outputs),
                      "path": str(res.path), "peak_rss_mb": round(peak_kb / 1024, 1),
                      "worker_peak_rss": (worker_peak_rss(cfg.resolve_path(logs))
                                          if cfg.refine.executor == "datatrove" and logs else {})}))


def run_pipeline(gen: Any, tmp: Path, n: int, seed: int, workers: int = 1,
                 executor: str = "local", tasks: int = 1, llm: bool = False) -> dict[str, Any]:
    import yaml

    data = tmp / f"data-{n}"
    gen.generate(data, n, seed, scale=True)
    cfg_file = tmp / f"refine-{n}-w{workers}-{executor}{tasks}.yaml"
    logs = tmp / f"datatrove-logs-{n}-{tasks}" if executor == "datatrove" else None
    cfg_file.write_text(yaml.safe_dump(refine_config(data, n, workers, executor, tasks, logs, llm),
                                       sort_keys=False), encoding="utf-8")
    proc = subprocess.run([sys.executable, __file__, "--child", str(cfg_file), str(tmp / "ws")],
                          capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp)})
    shutil.rmtree(data, ignore_errors=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"conversations": n, "error": last[:200]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    s = max(out["seconds"], 1e-9)
    return {"conversations": n, "executor": out["executor"],
            "tasks": out["tasks"] if out["executor"] == "datatrove" else None,
            "workers": out["workers"], "seconds": round(s, 2), "outputs": out["outputs"],
            "records_per_s": round(n / s, 1),
            "mb_per_s": round(out["bytes"] / s / 1e6, 3),
            "records_per_s_per_core": round(n / s / max(out["workers"], 1), 1),
            "peak_rss_mb": out["peak_rss_mb"], "counts": out["counts"], "path": out["path"],
            "worker_peak_rss": out["worker_peak_rss"]}


# -------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="5000 conversations, a smoke run")
    ap.add_argument("--rss-base", type=int, default=None,
                    help="M for the memory check at M and 10·M (default: conversations / 10)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=1,
                    help="also run the whole refine at the largest size with refine.workers = N")
    ap.add_argument("--skip-pipeline", action="store_true", help="stages and MinHash only")
    ap.add_argument("--skip-stages", action="store_true", help="the whole refine only")
    ap.add_argument("--executor", choices=("local", "datatrove"), default="local",
                    help="datatrove: also run the largest size with refine.executor: datatrove")
    ap.add_argument("--tasks", type=int, default=4, help="datatrove tasks (shards)")
    ap.add_argument("--llm", metavar="MODEL", help="also run the LLM judge and preference stages "
                    "on this model (a `studio models import` reference)")
    ap.add_argument("--child", nargs=2, metavar=("CONFIG", "WORKSPACE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(*args.child)
        return
    n = 5000 if args.quick else args.conversations
    base = args.rss_base or max(100, n // 10)

    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    tmp = Path(tempfile.mkdtemp(prefix="studio-bench-refine-"))
    offline.confine_caches(tmp / "cache")
    gen = load_generator()
    result: dict[str, Any] = {"conversations": n, "cpu_count": os.cpu_count()}
    try:
        t0 = time.perf_counter()
        data = tmp / "data"
        gen.generate(data, n, args.seed, scale=True)
        result["generate_seconds"] = round(time.perf_counter() - t0, 2)
        console.print(f"generated {n} conversations in {result['generate_seconds']} s")
        if not args.skip_stages:
            cfg = parse(refine_config(data, n))
            run = run_stages(cfg)
            stages = [m.row() for m in run.meters]
            timed = [m for m in run.meters if not m.skipped]
            chain_s = sum(m.seconds for m in timed)
            stages.append({"stage": "chain (sum of the above)", "records": run.meters[0].records,
                           "seconds": round(chain_s, 3),
                           "records_per_s": round(run.meters[0].records / max(chain_s, 1e-9), 1),
                           "mb_per_s": round(run.meters[0].bytes / max(chain_s, 1e-9) / 1e6, 3)})
            result["stages"] = stages
            result["minhash"] = bench_minhash(run.sample, cfg.refine.dedup, tmp)
            run.sample.clear()
        shutil.rmtree(data, ignore_errors=True)
        if not args.skip_pipeline:
            llm = bool(args.llm)
            if llm:  # into the workspace the refines share, in a process of its own: a
                # child's peak RSS counts its parent's (Linux keeps maxrss across fork and exec)
                subprocess.run([sys.executable, "-m", "engine", "-w", str(tmp / "ws"), "models",
                                "import", args.llm, "--name", LLM_MODEL], check=True, cwd=ROOT,
                               capture_output=True, env={**os.environ, "TMPDIR": str(tmp)})
            sizes = (base * 10,) if llm else (base, base * 10)  # the LLM stages: one size
            result["pipeline"] = [run_pipeline(gen, tmp, size, args.seed, llm=llm) for size in sizes]
            if args.workers > 1:  # the largest size again, the per-record stages in workers
                result["pipeline"].append(run_pipeline(gen, tmp, base * 10, args.seed, args.workers,
                                                       llm=llm))
            if args.executor == "datatrove":  # and again as datatrove tasks: ratio to local
                local = result["pipeline"][len(sizes) - 1]
                dt = run_pipeline(gen, tmp, base * 10, args.seed, args.workers, "datatrove",
                                  args.tasks, llm)
                result["pipeline"].append(dt)
                if "error" not in dt and "error" not in local:
                    result["datatrove_vs_local"] = {
                        "seconds_ratio": round(dt["seconds"] / max(local["seconds"], 1e-9), 2),
                        "same_bytes": dt["outputs"] == local["outputs"],
                        **dedup_agreement(Path(local["path"]), Path(dt["path"]))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title=f"refine stages, {n} conversations, one process (per core)")
    for col in ("stage", "records", "kept", "seconds", "records/s", "MB/s"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in result.get("stages", []):
        if "skipped" in row:
            table.add_row(row["stage"], "skipped: " + row["skipped"], "", "", "", "")
        else:
            table.add_row(row["stage"], str(row["records"]), str(row.get("kept", "")),
                          f"{row['seconds']:.2f}", f"{row['records_per_s']:,.0f}",
                          f"{row['mb_per_s']:.2f}")
    if "stages" in result:
        console.print(table)
    mh = Table(title=f"MinHash signatures (speed-up: engine vs each reference, same "
                     f"{REFERENCE_SAMPLE} conversations)")
    for col in ("implementation", "records/s", "MB/s", "engine speed-up"):
        mh.add_column(col, justify="left" if col == "implementation" else "right")
    for row in result.get("minhash", []):
        if "skipped" in row:
            mh.add_row(row["impl"], "skipped: " + row["skipped"], "", "")
        else:
            speedup = f"{row['engine_speedup']:.2f}x" if "engine_speedup" in row else ""
            mh.add_row(row["impl"], f"{row['records_per_s']:,.0f}", f"{row['mb_per_s']:.2f}", speedup)
    if "minhash" in result:
        console.print(mh)
    if "pipeline" in result:
        pt = Table(title="whole refine (engine.data.refine.refine), fresh process per size")
        for col in ("conversations", "executor", "workers", "seconds", "records/s", "MB/s",
                    "records/s per core", "peak RSS MB"):
            pt.add_column(col, justify="right")
        for row in result["pipeline"]:
            if "error" in row:
                pt.add_row(str(row["conversations"]), "", "", "error: " + row["error"], "", "", "",
                           "")
            else:
                executor = (f"datatrove, {row['tasks']} tasks" if row["executor"] == "datatrove"
                            else "local")
                pt.add_row(str(row["conversations"]), executor, str(row["workers"]),
                           f"{row['seconds']:.1f}",
                           f"{row['records_per_s']:,.0f}", f"{row['mb_per_s']:.2f}",
                           f"{row['records_per_s_per_core']:,.0f}", f"{row['peak_rss_mb']:.0f}")
        console.print(pt)
    if "datatrove_vs_local" in result:
        ratio = result["datatrove_vs_local"]
        console.print(f"datatrove / local time: {ratio['seconds_ratio']:.2f}x; same bytes: "
                      f"{ratio['same_bytes']}; dedup decisions agree on "
                      f"{ratio['decision_agreement']:.4%} of {ratio['records_at_dedup']} records")
        for row in result["pipeline"]:
            for phase, rss in row.get("worker_peak_rss", {}).items():
                console.print(f"datatrove {phase}: {rss['tasks']} tasks, worker peak RSS "
                              f"max {rss['max_mb']} MB, median {rss['median_mb']} MB")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
