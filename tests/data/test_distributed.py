"""Tests for engine.data.distributed: the normalize stage on datatrove's local executor equals in-process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("datatrove", reason="datatrove (the optional 'distributed' extra) is not installed")

from engine.config import NormalizeSpec  # noqa: E402
from engine.data import distributed  # noqa: E402
from engine.data.distributed import (  # noqa: E402
    ConversationReader,
    ConversationWriter,
    StudioNormalizeStep,
    from_document,
    run_local,
    to_document,
)
from engine.data.stages.normalize import normalize_conversation  # noqa: E402
from engine.errors import DataError, StudioError  # noqa: E402
from engine.records import Conversation  # noqa: E402

EXPORT = Path(__file__).parent / "fixtures" / "distributed" / "brightwave_export.jsonl"


def load(path: Path) -> list[Conversation]:
    return [Conversation.from_dict(json.loads(line))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def in_process(records: list[Conversation], spec: NormalizeSpec) -> tuple[list[Conversation], int, int]:
    out, dropped, changed = [], 0, 0
    for conv in records:
        norm, n = normalize_conversation(conv, spec)
        out.append(norm)
        dropped += n
        changed += norm.messages != conv.messages
    return out, dropped, changed


def tree(root: Path) -> set[str]:
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def by_id(records: list[Conversation]) -> list[dict[str, Any]]:
    return sorted((c.to_dict() for c in records), key=lambda d: d["id"])


def test_run_local_two_workers_equals_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # datatrove's default logging dir is relative: nothing may land here
    hf_home = Path(os.environ["HF_HOME"])
    hf_before = tree(hf_home)
    out = tmp_path / "out"

    run = run_local(EXPORT, out, tasks=2, workers=2)

    records = load(EXPORT)
    assert len(records) == 9
    expected, dropped, changed = in_process(records, NormalizeSpec())
    assert changed >= 5 and dropped == 2  # the fixture really exercises the stage
    assert by_id(run.records()) == by_id(expected)
    assert [c.id for c in run.records()] == [c.id for c in records]  # contiguous shards keep order
    assert run.stats == {"read": 9, "written": 9, "changed": changed, "turns_dropped": dropped}

    # lineage note: exactly the records normalize changed say so
    lines = [json.loads(line) for p in run.files for line in p.read_text(encoding="utf-8").splitlines()]
    before = {c.id: c.messages for c in records}
    assert {d["id"] for d in lines if d["changed_by"] == ["normalize"]} == {
        c.id for c in expected if c.messages != before[c.id]}
    assert all(d["changed_by"] in ([], ["normalize"]) and "hints" not in d for d in lines)

    # what datatrove wrote, and where: only records/ and logs/ under the output dir
    assert [p.name for p in run.files] == ["00000.jsonl", "00001.jsonl"]
    files = tree(out)
    assert {f for f in files if not f.startswith("logs/")} == {"records/00000.jsonl", "records/00001.jsonl"}
    assert {"logs/executor.json", "logs/stats.json", "logs/completions/00000", "logs/completions/00001",
            "logs/logs/task_00000.log", "logs/logs/task_00001.log"} <= files
    assert tree(cwd) == set() and tree(hf_home) == hf_before
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    # logs and stats carry counts and paths, never customer text
    logs = "".join((out / f).read_text(encoding="utf-8") for f in files if f.startswith("logs/"))
    for word in ("thermostat", "firmware", "doorbell", "Brightwave", "77120"):
        assert word not in logs


def test_folder_of_shards_and_a_non_default_spec(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    lines = [line for line in EXPORT.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i in range(3):  # three shard files, round robin, two tasks: task 0 gets files 0 and 2
        (shards / f"part-{i}.jsonl").write_text("".join(l + "\n" for l in lines[i::3]), encoding="utf-8")
    spec = NormalizeSpec(unicode_form="NFC", collapse_whitespace=False)

    run = run_local(shards, tmp_path / "out", tasks=2, workers=1, normalize=spec)

    expected, dropped, _ = in_process(load(EXPORT), spec)
    assert by_id(run.records()) == by_id(expected)
    assert by_id(run.records()) != by_id(in_process(load(EXPORT), NormalizeSpec())[0])  # spec travelled
    assert run.stats["read"] == run.stats["written"] == 9 and run.stats["turns_dropped"] == dropped
    assert sorted(p.name for p in shards.iterdir()) == ["part-0.jsonl", "part-1.jsonl", "part-2.jsonl"]


def test_more_tasks_than_records_and_an_empty_input(tmp_path: Path) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text(EXPORT.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    run = run_local(one, tmp_path / "out1", tasks=3, workers=1)
    assert [c.id for c in run.records()] == [load(EXPORT)[0].id]
    assert not (tmp_path / "out1" / "shards").exists()

    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    run = run_local(empty, tmp_path / "out2", tasks=2, workers=1)
    assert run.records() == [] and run.stats["read"] == 0


def test_user_errors(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(StudioError, match="not empty"):
        run_local(EXPORT, busy, tasks=1, workers=1)
    with pytest.raises(DataError, match="input not found"):
        run_local(tmp_path / "missing.jsonl", tmp_path / "o", tasks=1, workers=1)
    with pytest.raises(StudioError, match="at least 1"):
        run_local(EXPORT, tmp_path / "o", tasks=0, workers=1)

    bad = tmp_path / "bad.jsonl"
    first = EXPORT.read_text(encoding="utf-8").splitlines()[0]
    bad.write_text(first + '\n{"messages": "Brightwave secret order 4411"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        run_local(bad, tmp_path / "o2", tasks=1, workers=1)
    assert str(err.value).startswith("00000.jsonl:2: line is not a conversation record")
    assert "4411" not in str(err.value) and "Brightwave" not in str(err.value)


def test_steps_in_process_and_hints_round_trip(tmp_path: Path) -> None:
    conv = load(EXPORT)[2]
    record = {**conv.to_dict(), "hints": {"names": ["Dana Whitfield"]}}
    doc = to_document(record)
    assert doc.id == conv.id and doc.text.startswith("user: Ｍｙ ｒｏｕｔｅｒ")
    assert from_document(doc).hints == {"names": ["Dana Whitfield"]}

    step = StudioNormalizeStep({"unicode_form": "NFKC"})
    (done,) = list(step.run(iter([doc])))
    expected, dropped = normalize_conversation(conv, NormalizeSpec())
    assert from_document(done).messages == expected.messages and dropped == 1
    assert done.text == distributed.conversation_text(expected.messages)
    assert done.metadata["changed_by"] == ["normalize"]
    assert from_document(done).hints == {"names": ["Dana Whitfield"]}  # in-flight hints survive the step

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXPORT, src / "a.jsonl")
    docs = list(ConversationReader(str(src)).run(None, rank=0, world_size=1))
    assert [d.id for d in docs] == [c.id for c in load(EXPORT)]

    for keep in (False, True):
        with ConversationWriter(str(tmp_path / f"w{keep}"), keep_hints=keep) as writer:
            writer.write(done, rank=0)
        (line,) = (tmp_path / f"w{keep}" / "00000.jsonl").read_text(encoding="utf-8").splitlines()
        assert ("hints" in json.loads(line)) is keep
        assert Conversation.from_dict(json.loads(line)).messages == expected.messages
