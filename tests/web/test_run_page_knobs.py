"""The run page shows a run's TensorBoard log directory (train.logging: tensorboard) with the
command that opens it, and each source of a weighted data mixture with its weight."""

from __future__ import annotations

import json
from pathlib import Path

from engine.web.app import _templates
from engine.web.data import View


def test_run_page_links_tensorboard_and_mixture_sources(workspace, registry) -> None:
    run_dir = workspace.run_dir("default", "run-knobs")
    (run_dir / "tensorboard").mkdir(parents=True)
    (run_dir / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"\0" * 8)
    sources = [{"ref": "tickets@v2", "sha256": "a" * 64, "weight": 3.0, "rows": 40, "mixed_rows": 30},
               {"ref": "faq.jsonl", "sha256": "b" * 64, "weight": 1.0, "rows": 20, "mixed_rows": 10}]
    (run_dir / "manifest.json").write_text(json.dumps({"dataset": {"ref": "tickets@v2+faq.jsonl",
                                                                   "sources": sources}}))
    registry.put_run("run-knobs", "default", "sft", "tiny", "tickets@v2+faq.jsonl", run_dir)
    r = View(workspace, "default").run("run-knobs")
    assert r is not None and r["tensorboard"] == {"dir": str(run_dir / "tensorboard"), "event_files": 1}
    html = _templates().get_template("run.html.jinja").render(
        r=r, manifest=r["manifest"], lockfile_count=0, title="run-knobs")
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}" in html
    assert "tickets@v2 · weight 3.0 (30 of 40 rows)" in html and "faq.jsonl · weight 1.0" in html


def test_run_page_without_tensorboard_says_nothing_of_it(workspace, registry) -> None:
    run_dir = workspace.run_dir("default", "run-plain")
    run_dir.mkdir(parents=True)
    registry.put_run("run-plain", "default", "sft", "tiny", "tickets@v2", run_dir)
    r = View(workspace, "default").run("run-plain")
    assert r is not None and r["tensorboard"] is None
    html = _templates().get_template("run.html.jinja").render(r=r, manifest={}, lockfile_count=0)
    assert "tensorboard --logdir" not in html
