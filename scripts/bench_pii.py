#!/usr/bin/env python3
"""Benchmark: recall of the PII stage on planted personal data, false redactions, throughput.

What it measures, in ONE run on a corpus generated here by scripts/pii_corpus.py (Faker in ten
locales, libphonenumber, USPS Publication 28 street suffixes and units; about half the records
clean), calling `engine.data.stages.pii.detect` with every detector on (`PiiSpec()`) and no
name hints, one record at a time, one process:

1. recall per PII type and per locale/format group — a planted span is "fully caught" when every
   letter and digit of it lies inside the findings of its turn (spaces and punctuation inside or
   around it are ignored; the finding's type does not matter, the "other type" column counts
   full catches by a finding of another type), "partially caught" when some do, "missed" when
   none do; recall = fully caught / planted, against the issue's floors (FLOORS);
2. clean records changed — the share of clean records with at least one finding (floor ≤ 2%),
   and the most frequent falsely redacted spans (text and type) in them;
3. throughput — UTF-8 bytes of all message texts / seconds spent inside `detect`, in MB/s.

`--show-misses N` prints N missed or partly caught examples per type with their context
(»planted« span, findings in the context listed after it). Offline, no network, nothing written
to disk. A benchmark, never part of the test suite (tests/data/test_pii_corpus.py asserts the
floors on a smaller corpus). The last line is one JSON object with every number.

    python scripts/bench_pii.py                       # 4000 records, seed 7
    python scripts/bench_pii.py --records 20000 --seed 3 --show-misses 5
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import offline  # noqa: E402  (stdlib-only module)

offline.enforce()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from engine.config import PiiSpec  # noqa: E402
from engine.data.stages.pii import detect  # noqa: E402
from engine.records import Conversation, SourceRef  # noqa: E402

FLOORS = {"email": 0.995, "phone": 0.995, "card": 0.995, "iban": 0.995, "address": 0.995,
          "person": 0.97}
CLEAN_CHANGED_MAX = 0.02
EXAMPLES_KEPT = 50  # per type, for --show-misses and the tests' failure messages


def load_corpus() -> Any:
    """scripts/pii_corpus.py, imported by path."""
    if "pii_corpus" in sys.modules:
        return sys.modules["pii_corpus"]
    spec = importlib.util.spec_from_file_location("pii_corpus",
                                                  Path(__file__).with_name("pii_corpus.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pii_corpus"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


@dataclass
class Tally:
    planted: int = 0
    full: int = 0
    partial: int = 0
    missed: int = 0
    other_type: int = 0

    @property
    def recall(self) -> float:
        return self.full / self.planted if self.planted else 1.0


@dataclass
class Result:
    types: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    groups: dict[str, dict[str, Tally]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Tally)))
    misses: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    clean_records: int = 0
    clean_changed: int = 0
    false_spans: Counter = field(default_factory=Counter)
    false_shapes: Counter = field(default_factory=Counter)  # (type, shape) → count
    shape_example: dict[tuple[str, str], str] = field(default_factory=dict)
    extra_in_pii_records: int = 0  # findings overlapping no planted span, in PII records
    bytes: int = 0
    seconds: float = 0.0

    @property
    def clean_changed_share(self) -> float:
        return self.clean_changed / self.clean_records if self.clean_records else 0.0

    def to_json(self) -> dict[str, Any]:
        def tally(t: Tally) -> dict[str, Any]:
            return {**asdict(t), "recall": round(t.recall, 4)}
        return {
            "types": {k: tally(v) for k, v in sorted(self.types.items())},
            "groups": {k: {g: tally(t) for g, t in sorted(v.items())}
                       for k, v in sorted(self.groups.items())},
            "clean_records": self.clean_records, "clean_changed": self.clean_changed,
            "clean_changed_share": round(self.clean_changed_share, 4),
            "false_positives_top": [[t, s, n] for (t, s), n in self.false_spans.most_common(20)],
            "false_positive_shapes_top": [[t, s, n]
                                          for (t, s), n in self.false_shapes.most_common(15)],
            "extra_findings_in_pii_records": self.extra_in_pii_records,
            "bytes": self.bytes, "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.bytes / 1e6 / self.seconds, 3) if self.seconds else None,
        }


def shape(span: str) -> str:
    """A span's shape: digits → 9, letters → A / a (runs cut to 3 letters), the rest as is."""
    out = re.sub(r"\d", "9", span)
    out = re.sub(r"[^\W\d_]", lambda m: "A" if m.group().isupper() else "a", out)
    return re.sub(r"([Aa])\1{3,}", r"\1\1\1", out)


def _example(content: str, p: dict[str, Any], spans: list[tuple[int, int, str]],
             verdict: str) -> str:
    lo, hi = max(0, p["start"] - 50), min(len(content), p["end"] + 50)
    ctx = content[lo:p["start"]] + "»" + content[p["start"]:p["end"]] + "«" + content[p["end"]:hi]
    found = [f"{t}:{content[s:e]!r}" for s, e, t in spans if s < hi and e > lo]
    return f"[{p['group']}] {verdict}: {ctx!r}  found {found or 'nothing'}"


def evaluate(records: list[dict[str, Any]], spec: PiiSpec | None = None) -> Result:
    """Run `detect` over `records` (pii_corpus records) and judge every planted span."""
    judge = load_corpus().judge
    spec = spec or PiiSpec()
    res = Result()
    for line, rec in enumerate(records, 1):
        conv = Conversation(id=rec["id"], messages=rec["messages"],
                            source=SourceRef("bench.jsonl", line, rec["id"]), hints={"names": []})
        res.bytes += sum(len(m["content"].encode("utf-8")) for m in rec["messages"])
        t0 = time.perf_counter()
        findings = detect(conv, spec)
        res.seconds += time.perf_counter() - t0
        by_turn: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for f in findings:
            by_turn[f.turn].append((f.start, f.end, f.type))
        if rec["clean"]:
            res.clean_records += 1
            res.clean_changed += bool(findings)
            for f in findings:
                content = rec["messages"][f.turn]["content"]
                key = (f.type, shape(content[f.start:f.end]))
                res.false_spans[(f.type, content[f.start:f.end])] += 1
                res.false_shapes[key] += 1
                lo, hi = max(0, f.start - 40), min(len(content), f.end + 25)
                res.shape_example.setdefault(
                    key, f"{content[lo:f.start]}»{content[f.start:f.end]}«{content[f.end:hi]}")
            continue
        for f in findings:
            if not any(p["turn"] == f.turn and p["start"] < f.end and f.start < p["end"]
                       for p in rec["planted"]):
                res.extra_in_pii_records += 1
        for p in rec["planted"]:
            content = rec["messages"][p["turn"]]["content"]
            spans = by_turn.get(p["turn"], [])
            verdict = judge(content, p["start"], p["end"], [(s, e) for s, e, _ in spans])
            for tally in (res.types[p["type"]], res.groups[p["type"]][p["group"]]):
                tally.planted += 1
                setattr(tally, verdict, getattr(tally, verdict) + 1)
                if verdict == "full" and not any(t == p["type"] for s, e, t in spans
                                                 if s < p["end"] and e > p["start"]):
                    tally.other_type += 1
            if verdict != "full" and len(res.misses[p["type"]]) < EXAMPLES_KEPT:
                res.misses[p["type"]].append(_example(content, p, spans, verdict))
    return res


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), fmt.format(*["-" * w for w in widths])] +
                     [fmt.format(*map(str, r)) for r in rows])


def report(res: Result, show_misses: int) -> str:
    head = ["type", "planted", "full", "partial", "missed", "recall", "floor", "", "other type"]
    rows = [[t, v.planted, v.full, v.partial, v.missed, f"{v.recall:.4f}",
             f"{FLOORS.get(t, 0):.3f}", "ok" if v.recall >= FLOORS.get(t, 0) else "BELOW",
             v.other_type]
            for t, v in sorted(res.types.items())]
    out = ["PII recall per type (full = every letter/digit of the planted span inside a finding)",
           _table(rows, head), ""]
    for kind in sorted(res.groups):
        grows = [[g, v.planted, v.full, v.partial, v.missed, f"{v.recall:.4f}"]
                 for g, v in sorted(res.groups[kind].items(), key=lambda kv: (kv[1].recall, kv[0]))]
        out += [f"{kind}: per locale/format group (worst first)",
                _table(grows, ["group", "planted", "full", "partial", "missed", "recall"]), ""]
    share = res.clean_changed_share
    out.append(f"clean records changed: {res.clean_changed}/{res.clean_records} = {share:.2%} "
               f"(max {CLEAN_CHANGED_MAX:.0%}: {'ok' if share <= CLEAN_CHANGED_MAX else 'OVER'}); "
               f"findings outside planted spans in PII records: {res.extra_in_pii_records}")
    if res.false_spans:
        out += ["most frequent falsely redacted spans in clean records:",
                _table([[n, t, repr(s)] for (t, s), n in res.false_spans.most_common(20)],
                       ["count", "type", "span"])]
    if res.false_shapes:
        out += ["the same by shape (digits 9, letters A/a), with one example in context:",
                _table([[n, t, sh, repr(res.shape_example[(t, sh)])]
                        for (t, sh), n in res.false_shapes.most_common(15)],
                       ["count", "type", "shape", "example"])]
    mbps = res.bytes / 1e6 / res.seconds if res.seconds else float("nan")
    out.append(f"throughput of detect: {res.bytes / 1e6:.2f} MB in {res.seconds:.2f} s = "
               f"{mbps:.2f} MB/s (one process)")
    for kind in sorted(res.misses) if show_misses else []:
        out += ["", f"{kind}: first {show_misses} missed/partial examples"]
        out += ["  " + ex for ex in res.misses[kind][:show_misses]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=4000, help="conversations in the corpus")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--show-misses", type=int, default=0, metavar="N",
                    help="print N missed or partly caught examples per type")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    records = load_corpus().build(args.records, args.seed)
    built = time.perf_counter() - t0
    res = evaluate(records)
    print(f"corpus: {args.records} records (seed {args.seed}), "
          f"{sum(len(r['planted']) for r in records)} planted values, built in {built:.1f} s")
    print(report(res, args.show_misses))
    summary = {"records": args.records, "seed": args.seed, **res.to_json(),
               "floors": FLOORS, "clean_changed_max": CLEAN_CHANGED_MAX}
    print(json.dumps(summary, ensure_ascii=False, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
