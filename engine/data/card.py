"""The data card of a dataset version: card.json (counts and hashes only) and card.html.

card.json never holds customer text: counts per stage, input file, reject reason and PII type,
the PII residual scan of the written records (count, max, passed and record ids per type), split
sizes, length statistics, the refine config and its hash, and sha256 of every input and output.
card.html (engine/data/card_html.py) adds the length histogram and a few reject examples whose
text went through PII redaction.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.data.card_html import render_card_html
from engine.data.ingest.csv_tickets import delimiter_for
from engine.data.stages import pii
from engine.data.stages.split import SPLITS
from engine.hashing import sha256_json
from engine.registry import now_iso

if TYPE_CHECKING:
    from engine.config import RefineSpec, StudioConfig
    from engine.data.refine_passes import InputFile, RefineRun

CARD_SCHEMA = 2


def _length_stats(lengths: Any, unit: str) -> dict[str, Any]:
    values = sorted(lengths)
    if not values:
        return {"unit": unit, "count": 0}

    def q(p: float) -> int:
        return int(values[min(len(values) - 1, int(p * (len(values) - 1) + 0.5))])

    return {"unit": unit, "count": len(values), "min": int(values[0]), "p50": q(0.5),
            "p90": q(0.9), "p99": q(0.99), "max": int(values[-1]),
            "mean": round(sum(values) / len(values), 1)}


def build_card(run: "RefineRun", cfg: "StudioConfig", spec: "RefineSpec", inputs: list["InputFile"],
               tenant: str, version: int, started: str, outputs: dict[str, str]) -> dict[str, Any]:
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
        "pii": {k: run.pii.totals.get(k, 0) for k in pii.TYPES},
        "pii_residual": run.residual.summary(),
        "pii_vault": spec.pii.vault,
        "lengths": _length_stats(run.lengths, run.length_unit),
        "splits": {s: run.splits[s] for s in SPLITS},
        "outputs": outputs,
        "workers": spec.workers,
    }


def write_card(directory: Path, card: dict[str, Any], run: "RefineRun") -> None:
    (directory / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True,
                                                    ensure_ascii=False) + "\n", encoding="utf-8")
    examples = [e for bucket in run.examples.values() for e in bucket]
    html = render_card_html(card, examples=examples, lengths=list(run.lengths),
                            length_unit=run.length_unit)
    (directory / "card.html").write_text(html, encoding="utf-8")
