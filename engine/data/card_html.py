"""The data card page: card.json of one dataset version as a self-contained offline HTML file.

Inline CSS and inline SVG only: no script, font, image or stylesheet from anywhere, no URL at all,
so the page opens the same on an air-gapped machine. Every value goes through Jinja autoescaping;
example messages are shown as text (they arrive already PII-redacted by the pipeline).

Card keys this module does not know (new stages, new PII types, dedup clusters, decontam or judge
summaries…) are rendered generically — dicts as key/value tables, lists of dicts as tables — so a
new key shows up on the page without a template change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from importlib import resources
from typing import Any

import jinja2

from engine.records import message_text

TEMPLATE = "card.html.jinja"
# Where stages sit in the funnel; stages the card has but this list lacks go before "split".
STAGE_ORDER = ("ingest", "system_prompt", "normalize", "turns", "pii", "quality", "dedup",
               "decontam", "judge", "split")
STAGE_COUNT_KEYS = ("in", "out", "rejected")
SPLIT_ORDER = ("train", "val", "eval")
# Top-level card keys with their own section; every other key lands under "More from the card".
KNOWN_KEYS = frozenset({
    "schema", "tenant", "dataset", "version", "created_at", "ingest_started_at", "seed",
    "refine_config_sha256", "refine_config", "counts", "inputs", "stages", "rejects",
    "rejects_by_stage", "pii", "pii_residual", "splits", "outputs",
})
INPUT_COLUMNS = ("file", "format", "lines", "records", "rejected", "kept", "delimiter", "sha256")
MAX_EXAMPLES_PER_REASON = 5
MAX_TEXT_CHARS = 2000
MAX_GENERIC_ROWS = 200
MAX_GENERIC_DEPTH = 4
HIST_MAX_BINS = 24
# Histogram geometry (SVG user units; the SVG scales with the page through its viewBox).
SVG_W, SVG_H, SVG_LEFT, SVG_RIGHT, SVG_TOP, SVG_BOTTOM = 720, 220, 48, 12, 12, 40


# ------------------------------------------------------------------------------ formatting
def fmt_num(value: Any) -> str:
    """12345 → '12,345'; 0.25 → '0.25'; anything else → str."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.4g}"
    return "—" if value is None else str(value)


def fmt_pct(part: Any, whole: Any) -> str:
    if not isinstance(part, (int, float)) or not isinstance(whole, (int, float)) or whole <= 0:
        return ""
    return f"{100.0 * part / whole:.1f}%"


def _num(value: Any) -> int | float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _bar(value: Any, top: Any) -> float:
    """Width in percent of a CSS bar for value against the largest value of its table."""
    return round(100.0 * _num(value) / top, 1) if _num(top) > 0 else 0.0


def _clip(text: str) -> str:
    if len(text) > MAX_TEXT_CHARS:
        return text[:MAX_TEXT_CHARS] + f"\n… ({len(text) - MAX_TEXT_CHARS} more characters)"
    return text


# ------------------------------------------------------------------------- generic renderer
def generic(value: Any, depth: int = 0) -> dict[str, Any]:
    """A render tree for any JSON value: kv (dict), grid (list of dicts), list, or scalar."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict) and value:
        if depth >= MAX_GENERIC_DEPTH:
            return {"kind": "code", "text": json.dumps(value, ensure_ascii=False, default=str)}
        rows = [(str(k), generic(v, depth + 1)) for k, v in list(value.items())[:MAX_GENERIC_ROWS]]
        return {"kind": "kv", "rows": rows, "total": len(value)}
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, dict) for v in value) and depth < MAX_GENERIC_DEPTH:
            columns: list[str] = []
            for row in value:
                columns.extend(str(k) for k in row if str(k) not in columns)
            shown = value[:MAX_GENERIC_ROWS]
            return {"kind": "grid", "columns": columns, "total": len(value),
                    "rows": [[generic(row.get(c), depth + 1) for c in columns] for row in shown]}
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return {"kind": "scalar", "text": ", ".join(fmt_num(v) for v in value), "numeric": False}
        return {"kind": "list", "total": len(value),
                "items": [generic(v, depth + 1) for v in value[:MAX_GENERIC_ROWS]]}
    if isinstance(value, (dict, list, tuple)):
        return {"kind": "scalar", "text": "—", "numeric": False}
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {"kind": "scalar", "text": fmt_num(value), "numeric": numeric}


# --------------------------------------------------------------------------------- sections
def stage_order(stages: Iterable[str]) -> list[str]:
    """Known stages in pipeline order; unknown ones (sorted by name) just before 'split'."""
    names = list(stages)
    known = [s for s in STAGE_ORDER if s in names]
    unknown = sorted(s for s in names if s not in STAGE_ORDER)
    if "split" in known:
        return [*known[:-1], *unknown, "split"]
    return [*known, *unknown]


def funnel(card: dict[str, Any]) -> list[dict[str, Any]]:
    stages = card.get("stages") or {}
    base = _num((card.get("counts") or {}).get("input_records")) or max(
        (_num(s.get("in")) for s in stages.values() if isinstance(s, dict)), default=0)
    rows = []
    for name in stage_order(stages):
        info = stages[name]
        if not isinstance(info, dict):
            info = {"value": info}
        extra = {k: v for k, v in info.items() if k not in STAGE_COUNT_KEYS}
        rows.append({
            "name": name,
            "in": info.get("in"), "out": info.get("out"), "rejected": info.get("rejected"),
            "kept_pct": fmt_pct(info.get("out"), base), "bar": _bar(info.get("out"), base),
            "extra": generic(extra) if extra else None,
        })
    return rows


def counted(mapping: Any) -> list[dict[str, Any]] | None:
    """{name: count} → rows sorted by count (desc) then name, with bar widths; None if not flat."""
    if not isinstance(mapping, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in mapping.values()):
        return None
    top = max(mapping.values(), default=0)
    items = sorted(mapping.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return [{"name": str(k), "count": v, "bar": _bar(v, top)} for k, v in items]


def residual_rows(card: dict[str, Any]) -> list[dict[str, Any]] | None:
    """card["pii_residual"] (type → count, records, max, passed) as table rows, in the PII table's
    type order; None when the card has no residual scan (cards written before the leak gate)."""
    residual = card.get("pii_residual")
    if not isinstance(residual, dict) or not residual:
        return None
    pii = card.get("pii") if isinstance(card.get("pii"), dict) else {}
    order = [k for k in pii if k in residual] + sorted(k for k in residual if k not in pii)
    rows = []
    for kind in order:
        info = residual[kind] if isinstance(residual[kind], dict) else {"count": residual[kind]}
        limit, passed = info.get("max"), info.get("passed", True)
        status = "FAIL" if not passed else "report only" if limit is None else "passed"
        rows.append({"name": str(kind), "count": info.get("count"), "records": info.get("records"),
                     "max": "—" if limit is None else fmt_num(limit), "status": status,
                     "bad": not passed or bool(_num(info.get("count")))})
    return rows


def rejects_by_stage(card: dict[str, Any]) -> list[dict[str, Any]]:
    by_stage = card.get("rejects_by_stage") or {}
    rows = []
    for stage in stage_order(by_stage):
        reasons = counted(by_stage[stage]) or []
        total = sum(_num(r["count"]) for r in reasons)
        for i, r in enumerate(reasons):
            rows.append({"stage": stage, "first": i == 0, "span": len(reasons),
                         "stage_total": total, **r})
    return rows


def headline(card: dict[str, Any]) -> list[dict[str, Any]]:
    counts = dict(card.get("counts") or {})
    splits = card.get("splits") or {s: counts[s] for s in SPLIT_ORDER if s in counts}
    inp = counts.pop("input_records", None)
    rejected = counts.pop("rejected", None)
    split_names = [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits
                                                                  if s not in SPLIT_ORDER)
    kept = sum(_num(splits[s]) for s in split_names)
    cards = [{"key": "input_records", "label": "Input records", "value": inp, "note": ""},
             {"key": "kept", "label": "Kept", "value": kept, "note": fmt_pct(kept, inp) + " of input"},
             *({"key": s, "label": s, "value": splits[s], "note": fmt_pct(splits[s], kept) + " of kept"}
               for s in split_names),
             {"key": "rejected", "label": "Rejected", "value": rejected,
              "note": fmt_pct(rejected, inp) + " of input"}]
    for k in sorted(counts):  # counts the pipeline adds later
        if k not in splits:
            cards.append({"key": k, "label": k.replace("_", " "), "value": counts[k], "note": ""})
    return cards


def input_rows(card: dict[str, Any]) -> tuple[list[str], list[list[dict[str, Any]]]]:
    inputs = [i for i in card.get("inputs") or [] if isinstance(i, dict)]
    columns = [c for c in INPUT_COLUMNS if any(c in i for i in inputs)]
    for inp in inputs:
        columns.extend(k for k in inp if k not in columns)
    rows = []
    for inp in inputs:
        row = []
        for c in columns:
            v = inp.get(c)
            if c == "delimiter" and isinstance(v, str):
                node = {"kind": "scalar", "text": {"\t": "tab", " ": "space"}.get(v, v), "numeric": False}
            elif c == "sha256":
                node = {"kind": "hash", "text": str(v or "")}
            else:
                node = generic(v)
            row.append(node)
        rows.append(row)
    return columns, rows


def histogram(lengths: Iterable[int | float], max_bins: int = HIST_MAX_BINS) -> dict[str, Any] | None:
    """Bins of 'nice' width (1, 2 or 5 × 10^k, at least 1) over the lengths, plus summary stats
    and the SVG geometry of the bars. None when there are no lengths."""
    values = sorted(float(v) for v in lengths if isinstance(v, (int, float)) and math.isfinite(v))
    if not values:
        return None
    lo_v, hi_v, n = values[0], values[-1], len(values)
    raw = max((hi_v - lo_v) / max_bins, 1.0)
    mag = 10.0 ** math.floor(math.log10(raw))
    width = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo_v / width) * width
    nbins = int((hi_v - start) // width) + 1
    counts = [0] * nbins
    for v in values:
        counts[min(int((v - start) // width), nbins - 1)] += 1
    top = max(counts)
    plot_w, plot_h = SVG_W - SVG_LEFT - SVG_RIGHT, SVG_H - SVG_TOP - SVG_BOTTOM
    bar_w = plot_w / nbins
    bars = []
    for i, c in enumerate(counts):
        h = plot_h * c / top
        lo = start + i * width
        bars.append({"x": round(SVG_LEFT + i * bar_w + 1, 2), "w": round(max(bar_w - 2, 1), 2),
                     "y": round(SVG_TOP + plot_h - h, 2), "h": round(h, 2), "count": c,
                     "lo": fmt_num(lo), "hi": fmt_num(lo + width)})
    step = max(1, math.ceil(nbins / 8))  # at most ~9 x-axis labels
    ticks = [{"x": round(SVG_LEFT + i * bar_w, 2), "label": fmt_num(start + i * width)}
             for i in range(0, nbins + 1, step)]

    def pct(q: float) -> float:  # nearest-rank percentile
        return values[min(n - 1, max(0, math.ceil(q * n) - 1))]

    return {
        "n": n, "min": fmt_num(lo_v), "max": fmt_num(hi_v), "mean": fmt_num(round(sum(values) / n, 1)),
        "median": fmt_num(pct(0.5)), "p90": fmt_num(pct(0.9)), "p99": fmt_num(pct(0.99)),
        "bin_width": fmt_num(width), "bins": bars, "ticks": ticks, "top": top,
        "svg": {"w": SVG_W, "h": SVG_H, "left": SVG_LEFT, "right": SVG_W - SVG_RIGHT,
                "top": SVG_TOP, "base": SVG_TOP + plot_h},
    }


def _source_label(source: Any) -> str:
    if is_dataclass(source) and not isinstance(source, type):
        source = asdict(source)
    if isinstance(source, dict):
        loc = str(source.get("file") or "")
        if source.get("line") is not None:
            loc += f":{source['line']}"
        return f"{loc} (id {source['id']})" if source.get("id") else loc
    return "" if source is None else str(source)


def example_groups(examples: list[dict[str, Any]] | None,
                   reject_counts: dict[str, Any]) -> list[dict[str, Any]]:
    """Examples grouped by reason (most frequent reason first), at most N per reason."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for ex in examples or []:
        groups.setdefault(str(ex.get("reason") or "unknown"), []).append(ex)
    order = sorted(groups, key=lambda r: (-_num(reject_counts.get(r)), r))
    out = []
    for reason in order:
        items = groups[reason]
        out.append({
            "reason": reason, "total": _num(reject_counts.get(reason)) or len(items),
            "items": [{
                "stage": str(ex.get("stage") or ""),
                "source": _source_label(ex.get("source")),
                "messages": [{"role": str(m.get("role", "")) if isinstance(m, dict) else "",
                              "content": _clip(message_text(m.get("content") if isinstance(m, dict) else m))}
                             for m in ex.get("messages") or []],
            } for ex in items[:MAX_EXAMPLES_PER_REASON]],
        })
    return out


# ------------------------------------------------------------------------------------ render
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=fmt_num)
    return env


def _template() -> jinja2.Template:
    source = resources.files("engine.data").joinpath("templates", TEMPLATE).read_text("utf-8")
    return _environment().from_string(source)


def render_card_html(card: dict[str, Any], *, examples: list[dict[str, Any]] | None = None,
                     lengths: list[int] | None = None, length_unit: str = "tokens") -> str:
    """Render a dataset card.

    `examples`: rejected records to show, {"reason", "stage", "source", "messages"} each, with the
    messages already PII-redacted. `lengths`: one length per kept conversation, in `length_unit`
    ("tokens" or "characters"), drawn as a histogram.
    """
    rejects = card.get("rejects") or {}
    columns, inputs = input_rows(card)
    pii = card.get("pii")
    extras = [(k, generic(card[k])) for k in sorted(card) if k not in KNOWN_KEYS]
    return _template().render(
        card=card,
        title=f"{card.get('dataset', 'dataset')} v{card.get('version', '?')}",
        headline=headline(card),
        funnel=funnel(card),
        rejects=counted(rejects) or [],
        rejects_generic=None if counted(rejects) is not None or not rejects else generic(rejects),
        rejected_total=sum(_num(v) for v in rejects.values()) if isinstance(rejects, dict) else 0,
        rejects_by_stage=rejects_by_stage(card),
        pii=counted(pii),
        pii_generic=generic(pii) if pii and counted(pii) is None else None,
        pii_total=sum(_num(v) for v in pii.values()) if isinstance(pii, dict) else 0,
        residual=residual_rows(card),
        input_columns=columns,
        inputs=inputs,
        outputs=sorted((card.get("outputs") or {}).items()),
        hist=histogram(lengths or []),
        length_unit=length_unit,
        examples=example_groups(examples, rejects if isinstance(rejects, dict) else {}),
        max_examples=MAX_EXAMPLES_PER_REASON,
        extras=extras,
        config_json=json.dumps(card.get("refine_config"), indent=2, sort_keys=True,
                               ensure_ascii=False, default=str)
        if card.get("refine_config") is not None else "",
    )
