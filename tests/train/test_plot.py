"""The run's loss plot: an SVG whose curve follows metrics.jsonl."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from engine.train.plot import loss_svg, write_loss_plot


def test_loss_svg_is_valid_and_scaled(tmp_path: Path) -> None:
    rows = [{"step": i, "loss": 4.0 / i, "learning_rate": 1e-3} for i in range(1, 11)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = write_loss_plot(tmp_path)
    root = ET.fromstring(out.read_text())
    lines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(lines) == 2  # loss and learning rate
    ys = [float(p.split(",")[1]) for p in lines[0].get("points").split()]
    assert len(ys) == 10 and ys == sorted(ys)  # falling loss = rising y in SVG coordinates


def test_nothing_to_plot(tmp_path: Path) -> None:
    assert write_loss_plot(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "train_runtime": 3}) + "\n")
    assert write_loss_plot(tmp_path) is None
    assert "<svg" in loss_svg([])
