"""Tests for the refine pipeline: outputs, card, lineage, determinism, atomicity, dataset refs."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

import engine.data.refine as pipeline
import engine.data.record_workers as record_workers
from engine.data import refine_passes
from engine.config import StudioConfig, load_config
from engine.data.ingest.openai_jsonl import record_id
from engine.data.refine import refine
from engine.registry import parse_dataset_ref, resolve_dataset
from engine.errors import DataError, StudioError
from engine.hashing import file_manifest, sha256_file, sha256_json
from engine.registry import Registry
from engine.workspace import Workspace
from tests.scripted_model import ScriptedModel

FIXTURES = Path(__file__).parent / "fixtures"
SYSTEM = "You are Acme's support assistant."
CONFIG = f"""\
kind: refine
tenant: acme
seed: 7
refine:
  dataset: support
  system_prompt: "{SYSTEM}"
  inputs:
    - path: data/support_tickets.jsonl
      format: openai_jsonl
    - path: data/tickets.csv
      format: csv_tickets
      columns: {{id: ticket_id, transcript: transcript, meta: [channel, product]}}
    - path: data/pairs.tsv
      format: csv_tickets
      columns: {{id: id, customer: customer, agent: agent, meta: [queue]}}
  split: {{val_fraction: 0.2, eval_fraction: 0.3}}
"""
OUTPUTS = ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl")


def make_config(tmp_path: Path, text: str = CONFIG) -> StudioConfig:
    shutil.copytree(FIXTURES, tmp_path / "data", dirs_exist_ok=True)
    (tmp_path / "refine.yaml").write_text(text, encoding="utf-8")
    return load_config(tmp_path / "refine.yaml")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_records(path: Path) -> dict[str, dict[str, Any]]:
    """source id (or file:line) → record, over train/val/eval, with the split added."""
    out = {}
    for split in ("train", "val", "eval"):
        for rec in read_jsonl(path / f"{split}.jsonl"):
            key = rec["source"]["id"] or f"{rec['source']['file']}:{rec['source']['line']}"
            out[key] = {**rec, "split": split}
    return out


def dataset_entries(ws: Workspace) -> list[str]:
    d = ws.root / "tenants" / "acme" / "datasets" / "support"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --------------------------------------------------------------------------------- outputs
def test_refine_writes_a_registered_dataset_version(tmp_path: Path, workspace: Workspace,
                                                    registry: Registry) -> None:
    cfg = make_config(tmp_path)
    result = refine(cfg, workspace, registry)

    assert (result.tenant, result.name, result.version) == ("acme", "support", 1)
    assert result.path == workspace.dataset_dir("acme", "support", 1)
    assert sorted(p.name for p in result.path.iterdir()) == sorted([*OUTPUTS, "card.json", "card.html"])
    assert dataset_entries(workspace) == ["v1"]
    assert result.counts == {"input_records": 24, "rejected": 12, "train": result.counts["train"],
                             "val": result.counts["val"], "eval": result.counts["eval"]}
    assert result.counts["train"] + result.counts["val"] + result.counts["eval"] == 12

    row = registry.get_dataset("acme", "support", 1)
    assert row is not None and row["path"] == str(result.path)
    assert row["sha256"] == result.sha256 == sha256_json(file_manifest(result.path))
    assert row["counts"] == result.counts
    assert row["ingest_started_at"] and row["ingest_started_at"] <= row["created_at"]

    records = all_records(result.path)
    assert sorted(records) == sorted([
        "T-1001", "T-1002", "T-1005", "T-1007", "T-1010", "T-1013", "support_tickets.jsonl:16",
        "C-2001", "C-2002", "C-2005", "P-1", "P-4",
    ])
    # PII redacted exactly, with surrogates numbered across the whole refine (the same phone
    # number in two files is one placeholder); order numbers, dates and an invalid card kept
    t1001 = records["T-1001"]["messages"]
    assert t1001[0] == {"role": "system", "content": SYSTEM}
    assert t1001[1]["content"] == ("Hi, my router keeps dropping the wifi connection every evening. "
                                   "You can email me at <EMAIL_1> or call <PHONE_1>. Order #482913.")
    assert records["T-1002"]["messages"][1]["content"] == (
        "I was charged twice on my card <CARD_1>. My old card 1234 5678 9012 3456 was cancelled last month.")
    # a conversation with its own system message keeps it; whitespace normalized
    assert records["T-1007"]["messages"] == [
        {"role": "system", "content": "You are the billing desk of Acme Telecom."},
        {"role": "user", "content": "Hello there! My number changed:\n\nnew one is <PHONE_2>. Office: <PHONE_3>."},
        {"role": "assistant", "content": "Thanks! I updated your contact number.\n\nAnything else?"},
        {"role": "user", "content": "Also my US line, <PHONE_4>."},
        {"role": "assistant", "content": "Added that one as well."},
    ]
    assert records["T-1010"]["messages"][1]["content"] == (
        "Can I move the delivery of order #99812 to 2024-03-05 at 14:30?")
    assert records["T-1013"]["messages"][1]["content"] == (
        "Please reset my password. Reach me at <PHONE_2> or <EMAIL_2>")
    assert records["C-2005"]["messages"][1:] == [
        {"role": "user", "content": "Please call me back on <PHONE_2>.\nAny time after 5pm."},
        {"role": "assistant", "content": "Will do, we'll call you after 5pm."},
    ]
    # a tool turn (an API call in the chat log) is dropped by the turns stage, the chat kept
    assert [m["role"] for m in records["T-1005"]["messages"]] == ["system", "user", "assistant"]
    assert records["C-2001"]["meta"] == {"channel": "chat", "product": "router"}
    assert records["P-1"]["meta"] == {"queue": "billing"}
    assert records["T-1001"]["id"] == record_id("support_tickets.jsonl", 1, "T-1001")

    everything = "".join((result.path / f).read_text(encoding="utf-8") for f in [*OUTPUTS, "card.json"])
    for secret in ("jane.doe@example.com", "7946 0958", "4111 1111 1111 1111", "sam@example.net",
                   "555-123-4567", "1234567", "MARK.SMITH"):
        assert secret not in everything


def test_rejects_carry_line_numbers_reasons_and_no_customer_text(tmp_path: Path, workspace: Workspace,
                                                                 registry: Registry) -> None:
    result = refine(make_config(tmp_path), workspace, registry)
    rejects = read_jsonl(result.path / "rejects.jsonl")
    survivor = record_id("support_tickets.jsonl", 1, "T-1001")
    assert [(r["source"]["file"], r["source"]["line"], r["stage"], r["reason"]) for r in rejects] == [
        ("support_tickets.jsonl", 3, "ingest", "bad_json"),
        ("support_tickets.jsonl", 4, "dedup", "exact_duplicate"),
        ("support_tickets.jsonl", 7, "quality", "no_final_assistant_turn"),
        ("support_tickets.jsonl", 9, "ingest", "bad_schema"),
        ("support_tickets.jsonl", 10, "ingest", "bad_schema"),
        ("support_tickets.jsonl", 12, "quality", "too_few_turns"),
        ("support_tickets.jsonl", 13, "quality", "too_few_turns"),
        ("support_tickets.jsonl", 15, "ingest", "bad_schema"),
        ("tickets.csv", 11, "ingest", "empty_transcript"),
        ("tickets.csv", 12, "ingest", "empty_transcript"),
        ("pairs.tsv", 3, "quality", "too_few_turns"),
        ("pairs.tsv", 4, "ingest", "empty_transcript"),
    ]
    dup = rejects[1]
    assert dup["detail"] == f"duplicate of {survivor}"
    assert dup["record_id"] == record_id("support_tickets.jsonl", 4, "T-1004")
    text = (result.path / "rejects.jsonl").read_text(encoding="utf-8")
    for word in ("parcel", "diagnostic", "damaged", "anyone", "roaming", "internal", "Hello?"):
        assert word not in text


def test_card_and_lineage(tmp_path: Path, workspace: Workspace, registry: Registry) -> None:
    cfg = make_config(tmp_path)
    result = refine(cfg, workspace, registry)
    card = json.loads((result.path / "card.json").read_text(encoding="utf-8"))
    assert (card["tenant"], card["dataset"], card["version"], card["seed"]) == ("acme", "support", 1, 7)
    assert card["refine_config_sha256"] == sha256_json(cfg.refine.model_dump(mode="json"))
    assert card["created_at"] and card["ingest_started_at"] <= card["created_at"]
    assert card["inputs"] == [
        {"file": "support_tickets.jsonl", "format": "openai_jsonl", "delimiter": None, "lines": 16, "records": 11,
         "rejected": 8, "kept": 7, "sha256": sha256_file(FIXTURES / "support_tickets.jsonl")},
        {"file": "tickets.csv", "format": "csv_tickets", "delimiter": ",", "lines": 17, "records": 3,
         "rejected": 2, "kept": 3, "sha256": sha256_file(FIXTURES / "tickets.csv")},
        {"file": "pairs.tsv", "format": "csv_tickets", "delimiter": "\t", "lines": 5, "records": 3,
         "rejected": 2, "kept": 2, "sha256": sha256_file(FIXTURES / "pairs.tsv")},
    ]
    assert card["rejects"] == {"bad_json": 1, "bad_schema": 3, "empty_transcript": 3, "exact_duplicate": 1,
                               "no_final_assistant_turn": 1, "too_few_turns": 3}
    assert card["pii"] == {"email": 4, "phone": 7, "card": 1, "iban": 0, "ip": 0, "address": 0,
                           "person": 0}
    stages = card["stages"]
    assert stages["ingest"] == {"in": 24, "out": 17, "rejected": 7}
    assert stages["system_prompt"] == {"in": 17, "out": 17, "rejected": 0, "added": 16}
    assert stages["turns"] == {"in": 17, "out": 17, "rejected": 0, "merged": 1, "tool_dropped": 1}
    assert stages["quality"] == {"in": 17, "out": 13, "rejected": 4}
    assert stages["dedup"] == {"in": 13, "out": 12, "rejected": 1, "clusters": 1}
    assert stages["split"]["out"] == 12
    train_val = card["splits"]["train"] + card["splits"]["val"]
    assert stages["decontam"] == {"in": train_val, "out": train_val, "rejected": 0,
                                  "eval_items_indexed": card["splits"]["eval"]}
    assert stages["judge"]["skipped"] and stages["rewrite"]["skipped"]  # no LLM stages configured
    assert sum(card["splits"].values()) == 12 and card["splits"] == {
        s: result.counts[s] for s in ("train", "val", "eval")}
    assert card["outputs"] == {f: sha256_file(result.path / f) for f in OUTPUTS}

    lineage = read_jsonl(result.path / "lineage.jsonl")
    records = all_records(result.path)
    assert [(e["source"]["file"], e["source"]["line"]) for e in lineage] == [  # input order
        ("support_tickets.jsonl", 1), ("support_tickets.jsonl", 2), ("support_tickets.jsonl", 6),
        ("support_tickets.jsonl", 8),
        ("support_tickets.jsonl", 11), ("support_tickets.jsonl", 14), ("support_tickets.jsonl", 16),
        ("tickets.csv", 2), ("tickets.csv", 8), ("tickets.csv", 14), ("pairs.tsv", 2), ("pairs.tsv", 5),
    ]
    assert {e["id"]: e["split"] for e in lineage} == {r["id"]: r["split"] for r in records.values()}
    by_source = {e["source"]["id"]: e for e in lineage}
    assert by_source["T-1001"]["duplicates"] == [record_id("support_tickets.jsonl", 4, "T-1004")]
    assert by_source["T-1001"]["pii"] == {"email": 1, "phone": 1}
    assert by_source["T-1001"]["changed_by"] == ["system_prompt", "pii"]
    assert by_source["T-1001"]["source"] == {"file": "support_tickets.jsonl", "line": 1, "id": "T-1001"}
    assert by_source["T-1007"]["changed_by"] == ["normalize", "pii"]
    assert by_source["T-1007"]["pii"] == {"phone": 3}
    assert by_source["P-1"]["pii"] == {} and by_source["P-1"]["duplicates"] == []
    assert by_source["P-1"]["stages"] == list(pipeline.STAGES)


def test_two_refines_of_the_same_input_are_byte_identical(tmp_path: Path, workspace: Workspace,
                                                         registry: Registry) -> None:
    cfg = make_config(tmp_path)
    first = refine(cfg, workspace, registry)
    second = refine(cfg, workspace, registry)
    assert (first.version, second.version) == (1, 2)
    for name in OUTPUTS:
        assert (first.path / name).read_bytes() == (second.path / name).read_bytes(), name
    # a fresh workspace gives the same bytes too
    other = Workspace(tmp_path / "other-ws").ensure()
    third = refine(cfg, other, Registry(other.registry_path))
    for name in OUTPUTS:
        assert (first.path / name).read_bytes() == (third.path / name).read_bytes(), name
    # another seed moves records between splits but keeps the same survivors
    reseeded = make_config(tmp_path / "reseed", CONFIG.replace("seed: 7", "seed: 8"))
    fourth = refine(reseeded, workspace, registry)
    assert sorted(all_records(fourth.path)) == sorted(all_records(first.path))


# ------------------------------------------------------------------------------- atomicity
@pytest.mark.parametrize("exc", [RuntimeError("stage blew up"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_no_version_and_no_registry_row(
        tmp_path: Path, workspace: Workspace, registry: Registry, monkeypatch: pytest.MonkeyPatch,
        exc: BaseException) -> None:
    cfg = make_config(tmp_path)
    real_process = record_workers.process
    calls = []

    def exploding(conv, spec):  # type: ignore[no-untyped-def]
        calls.append(conv.id)
        if len(calls) == 5:
            raise exc
        return real_process(conv, spec)

    monkeypatch.setattr(record_workers, "process", exploding)
    with pytest.raises(type(exc)):
        refine(cfg, workspace, registry)
    assert dataset_entries(workspace) == []  # no v1, no hidden partial directory
    assert registry.list_datasets("acme") == []

    monkeypatch.setattr(record_workers, "process", real_process)
    assert refine(cfg, workspace, registry).version == 1
    assert dataset_entries(workspace) == ["v1"]


def test_failure_while_registering_removes_the_renamed_version(
        tmp_path: Path, workspace: Workspace, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(tmp_path)

    def broken_put(*args: object, **kwargs: object) -> None:
        raise RuntimeError("registry is locked")

    monkeypatch.setattr(registry, "put_dataset", broken_put)
    with pytest.raises(RuntimeError, match="locked"):
        refine(cfg, workspace, registry)
    assert dataset_entries(workspace) == []
    assert registry.list_datasets("acme") == []


def test_leftover_version_directory_is_never_overwritten(tmp_path: Path, workspace: Workspace,
                                                         registry: Registry) -> None:
    stale = workspace.dataset_dir("acme", "support", 1)
    stale.mkdir(parents=True)
    (stale / "train.jsonl").write_text("stale\n", encoding="utf-8")
    result = refine(make_config(tmp_path), workspace, registry)
    assert result.version == 2
    assert (stale / "train.jsonl").read_text(encoding="utf-8") == "stale\n"


# ------------------------------------------------------------------------------ user errors
def test_missing_csv_column_fails_before_writing(tmp_path: Path, workspace: Workspace,
                                                 registry: Registry) -> None:
    cfg = make_config(tmp_path, CONFIG.replace("meta: [channel, product]", "meta: [channel, priority]"))
    with pytest.raises(DataError) as err:
        refine(cfg, workspace, registry)
    assert "tickets.csv" in str(err.value) and "'priority'" in str(err.value)
    assert not (workspace.root / "tenants" / "acme" / "datasets").exists()
    assert registry.list_datasets("acme") == []


def test_missing_input_file_names_the_file(tmp_path: Path, workspace: Workspace, registry: Registry) -> None:
    cfg = make_config(tmp_path, CONFIG.replace("data/pairs.tsv", "data/missing.tsv"))
    with pytest.raises(DataError, match="missing.tsv"):
        refine(cfg, workspace, registry)
    assert dataset_entries(workspace) == []


# -------------------------------------------------------------------------------- progress
def test_progress_tasks_per_input_file_reach_their_totals(tmp_path: Path, workspace: Workspace,
                                                          registry: Registry) -> None:
    progress = Progress(console=Console(file=io.StringIO()), disable=True)
    with progress:
        refine(make_config(tmp_path), workspace, registry, progress=progress)
    tasks = [(t.description, t.total, t.completed) for t in progress.tasks]
    assert tasks == [("refine support_tickets.jsonl", 16, 16), ("refine tickets.csv", 17, 17),
                     ("refine pairs.tsv", 5, 5)]


# ---------------------------------------------------------------------------- dataset refs
def test_parse_dataset_ref() -> None:
    assert parse_dataset_ref("support") == ("support", None)
    assert parse_dataset_ref("support@latest") == ("support", None)
    assert parse_dataset_ref("support@v3") == ("support", 3)
    assert parse_dataset_ref("support@12") == ("support", 12)
    for bad in ("", "support@", "support@vx", "a@1@2", "sup port"):
        with pytest.raises(StudioError, match="invalid dataset reference"):
            parse_dataset_ref(bad)


def test_resolve_dataset(tmp_path: Path, workspace: Workspace, registry: Registry) -> None:
    with pytest.raises(StudioError) as err:
        resolve_dataset(registry, "acme", "support")
    assert "no datasets yet" in str(err.value)

    cfg = make_config(tmp_path)
    refine(cfg, workspace, registry)
    refine(cfg, workspace, registry)
    assert resolve_dataset(registry, "acme", "support")["version"] == 2
    assert resolve_dataset(registry, "acme", "support@v1")["version"] == 1
    assert resolve_dataset(registry, "acme", "support@2")["path"] == str(
        workspace.dataset_dir("acme", "support", 2))

    with pytest.raises(StudioError) as err:
        resolve_dataset(registry, "acme", "support@v9")
    assert "support@v9" in str(err.value) and "v1, v2" in str(err.value)
    with pytest.raises(StudioError) as err:
        resolve_dataset(registry, "acme", "tickets")
    assert "'tickets'" in str(err.value) and "support" in err.value.hint  # type: ignore[operator]
    with pytest.raises(StudioError):
        resolve_dataset(registry, "other-tenant", "support")


# ------------------------------------------------------------------------------ LLM stages
LLM_STAGES = """\
  llm:
    model: scripted
    batch_size: 3
    judge: {enabled: true, threshold: 2.95}
    extract_qa: {enabled: true, min_turns: 2, keep_source: false}
    rewrite: {enabled: true}
    preferences: {enabled: true}
"""


def test_all_llm_stages_run_through_a_whole_refine(tmp_path: Path, workspace: Workspace,
                                                   registry: Registry,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The four LLM stages in one in-process refine (a scripted model: see tests/scripted_model):
    judge rejects and notes, transcripts replaced by their Q/A pairs (which keep the transcript's
    split), rewrites marked in the lineage, preference rows for train records only, and a
    lineage still in input order although preferences takes the train records alone."""
    monkeypatch.setattr(refine_passes, "open_backend", lambda *a, **k: ScriptedModel())
    result = refine(make_config(tmp_path, CONFIG + LLM_STAGES), workspace, registry)
    card = json.loads((result.path / "card.json").read_text(encoding="utf-8"))
    stages = card["stages"]
    assert stages["judge"]["rejected"] > 0 and stages["judge"]["out"] > 0
    assert len(read_jsonl(result.path / "judge.jsonl")) == stages["judge"]["in"]
    assert stages["extract_qa"]["rejected"] > 0 and stages["extract_qa"]["pairs"] > 0
    assert stages["rewrite"]["rewritten"] > 0
    written = {split: read_jsonl(result.path / f"{split}.jsonl") for split in ("train", "val", "eval")}
    pairs = [r for split in ("train", "val") for r in written[split] if "extracted_from" in r["meta"]]
    assert len(pairs) == stages["extract_qa"]["pairs"]
    replaced = {r["record_id"] for r in read_jsonl(result.path / "rejects.jsonl")
                if r["reason"] == "replaced_by_qa"}
    assert {p["meta"]["extracted_from"] for p in pairs} == replaced
    lineage = read_jsonl(result.path / "lineage.jsonl")
    by_id = {e["id"]: e for e in lineage}
    train_ids = {r["id"] for r in written["train"]}
    for pair in pairs:  # a pair has its own lineage entry, in its transcript's split
        assert by_id[pair["id"]]["split"] == ("train" if pair["id"] in train_ids else "val")
    assert any("rewrite" in by_id[r["id"]]["changed_by"] for split in ("train", "val")
               for r in written[split] if r["meta"].get("rewritten"))
    rows = read_jsonl(result.path / "preferences.jsonl")
    assert len(rows) == stages["preferences"]["pairs"] > 0
    files = ["support_tickets.jsonl", "tickets.csv", "pairs.tsv"]
    order = [(files.index(e["source"]["file"]), e["source"]["line"]) for e in lineage]
    assert order == sorted(order) and len(order) == sum(len(v) for v in written.values())
