"""Loss and learning-rate curves of a run as a small self-contained SVG (no plotting library)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

W, H, PAD = 640, 260, 44


def _polyline(points: list[tuple[float, float]], xmax: float, ymin: float, ymax: float,
              color: str) -> str:
    if not points:
        return ""
    span = (ymax - ymin) or 1.0
    coords = " ".join(
        f"{PAD + (x / (xmax or 1)) * (W - 2 * PAD):.1f},{H - PAD - ((y - ymin) / span) * (H - 2 * PAD):.1f}"
        for x, y in points)
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{coords}"/>'


def loss_svg(rows: list[dict], title: str = "") -> str:
    """An SVG with the training loss (left axis) and learning rate (scaled, dashed) per step."""
    loss = [(float(r["step"]), float(r["loss"])) for r in rows if "loss" in r and "step" in r]
    lr = [(float(r["step"]), float(r["learning_rate"])) for r in rows
          if "learning_rate" in r and "step" in r]
    xmax = max([p[0] for p in loss + lr] or [1.0])
    ymax = max([p[1] for p in loss] or [1.0])
    lrmax = max([p[1] for p in lr] or [1.0]) or 1.0
    lr_scaled = [(x, y / lrmax * ymax) for x, y in lr]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#888"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#888"/>',
        f'<text x="{PAD}" y="{PAD - 14}" font-weight="bold">{escape(title)}</text>',
        f'<text x="{PAD - 4}" y="{PAD + 4}" text-anchor="end">{ymax:.3g}</text>',
        f'<text x="{PAD - 4}" y="{H - PAD}" text-anchor="end">0</text>',
        f'<text x="{W - PAD}" y="{H - PAD + 16}" text-anchor="end">step {int(xmax)}</text>',
        _polyline(loss, xmax, 0.0, ymax, "#1f6feb"),
        _polyline(lr_scaled, xmax, 0.0, ymax, "#d29922").replace("/>", ' stroke-dasharray="4 3"/>', 1)
        if lr_scaled else "",
        f'<text x="{W - PAD}" y="{PAD - 14}" text-anchor="end"><tspan fill="#1f6feb">loss</tspan>'
        f' · <tspan fill="#d29922">learning rate (max {lrmax:.2g})</tspan></text>',
        "</svg>",
    ]
    return "\n".join(p for p in parts if p)


def write_loss_plot(run_dir: Path) -> Path | None:
    """runs/<id>/loss.svg from metrics.jsonl; None when there is nothing to plot."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line]
    if not any("loss" in r for r in rows):
        return None
    out = run_dir / "loss.svg"
    out.write_text(loss_svg(rows, title=run_dir.name), encoding="utf-8")
    return out
