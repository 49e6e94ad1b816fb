"""The eval diff report: one self-contained offline HTML page (inline CSS, no scripts, no URLs)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import jinja2

TEMPLATE = "report.html.jinja"
BUCKET_ORDER = ("broke", "fixed", "both_wrong", "both_right")
BUCKET_TITLES = {
    "broke": "Broke: base right, tuned wrong",
    "fixed": "Fixed: base wrong, tuned right",
    "both_wrong": "Both wrong",
    "both_right": "Both right",
}
MAX_ITEMS_PER_BUCKET = 200
MAX_TEXT_CHARS = 4000


def fmt_pct(x: float | None) -> str:
    """0.625 → '62.5%'."""
    return "n/a" if x is None else f"{100.0 * float(x):.1f}%"


def fmt_ci(ci: Any) -> str:
    """[0.55, 0.68] → '[55.0%, 68.0%]'."""
    if not ci or len(ci) != 2:
        return "n/a"
    return f"[{fmt_pct(ci[0])}, {fmt_pct(ci[1])}]"


def fmt_p(p: float | None) -> str:
    """p-values: 4 decimals, scientific notation below 1e-4."""
    if p is None:
        return "n/a"
    p = float(p)
    return f"{p:.2e}" if 0.0 < p < 1e-4 else f"{p:.4f}"


def fmt_diff(d: float | None) -> str:
    """+0.05 → '+5.0 pts'."""
    return "n/a" if d is None else f"{100.0 * float(d):+.1f} pts"


def last_user_message(prompt: Any) -> str:
    """The content of the last user message of a chat prompt (or the prompt itself if text)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        for msg in reversed(prompt):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return message_text(msg.get("content"))
    return ""


def message_text(content: Any) -> str:
    """Message content — a string or multimodal parts (their text parts) — as plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal content parts: keep the text parts
        return "\n".join(str(p.get("text", "")) for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _clip(text: Any) -> str:
    text = message_text(text)
    if len(text) > MAX_TEXT_CHARS:
        return text[:MAX_TEXT_CHARS] + f"\n… ({len(text) - MAX_TEXT_CHARS} more characters)"
    return text


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=fmt_pct, ci=fmt_ci, pval=fmt_p, diff=fmt_diff)
    return env


def _template() -> jinja2.Template:
    source = resources.files("engine.eval").joinpath("templates", TEMPLATE).read_text("utf-8")
    return _environment().from_string(source)


def render_report(stats: dict[str, Any], pairs: list[dict[str, Any]]) -> str:
    """Render the diff report. `pairs` rows carry item_id, bucket, base_score, tuned_score, meta,
    and the texts: prompt (chat messages or text), reference, base_output, tuned_output."""
    grouped: dict[str, list[dict[str, Any]]] = {b: [] for b in BUCKET_ORDER}
    for pair in pairs:
        grouped.setdefault(pair["bucket"], []).append(pair)
    buckets = []
    for name in BUCKET_ORDER:
        rows = grouped.get(name, [])
        buckets.append({
            "name": name,
            "title": BUCKET_TITLES[name],
            "total": len(rows),
            "open": name in ("broke", "fixed"),
            "items": [
                {
                    "item_id": str(p.get("item_id", "")),
                    "meta": p.get("meta") or {},
                    "user": _clip(last_user_message(p.get("prompt"))),
                    "reference": _clip(p.get("reference", "")),
                    "base_output": _clip(p.get("base_output", "")),
                    "tuned_output": _clip(p.get("tuned_output", "")),
                }
                for p in rows[:MAX_ITEMS_PER_BUCKET]
            ],
        })
    gate = stats.get("gate") or {}
    return _template().render(
        stats=stats,
        overall=stats["overall"],
        verdict=stats["verdict"],
        gate=gate,
        labels=stats.get("labels") or {"base": "base", "tuned": "tuned"},
        slices=stats.get("slices") or {},
        slice_key=stats.get("slice_key"),
        buckets=buckets,
        cap=MAX_ITEMS_PER_BUCKET,
    )
