"""Proof-of-gain record: proof.json, the hashes a third party needs to re-run and check one eval.

Every eval directory gets a `proof.json` with, per section, what was used and its sha256:
- suite:       the eval config (generation, grader, split, limit, slice key; not the model list
               or the cache switch, which do not change a result);
- dataset:     dataset name@version, its content sha256, the split;
- items:       per item its id, item_hash (prompt + reference) and prompt_sha256, and the sha256
               of the ordered (item_id, item_hash) list;
- model:       base model name and manifest sha256, adapter / parent / full-model weight hashes
               (`ModelRef.weights`, the same hashes that key the generation cache);
- judge:       the judge model's identity when a judge graded the outputs, else null;
- seeds:       the generation seed;
- generation:  max_new_tokens, temperature, batch size, and the backend's description
               (library versions, device, dtype, chat template hash);
- environment: engine version, key package versions, the whole installed-package lockfile, the
               git commit (from `engine.manifest`); hardware is recorded but not hashed.
`hashes` holds one sha256 per section and `proof_sha256` is the hash of `hashes`: it changes when
an item, the model, the settings or the environment change, and not when the same eval is
repeated (eval_id and created_at are outside it). Customer text never enters the record: ids and
hashes only.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.config import EvalSpec
from engine.errors import StudioError
from engine.hashing import sha256_json
from engine.manifest import environment_section

PROOF_FILE = "proof.json"
PROOF_FORMAT = "studio.proof/1"
SECTIONS = ("suite", "dataset", "items", "model", "judge", "seeds", "generation", "environment")
_SUITE_EXCLUDE = {"models", "cache"}
_UNHASHED = {"hardware", "git_dirty"}  # recorded for the reader, not part of the section hash


def items_section(items: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [{"item_id": str(it["item_id"]), "item_hash": it["item_hash"],
             "prompt_sha256": sha256_json(list(it["prompt"]))} for it in items]
    return {"count": len(rows),
            "sha256": sha256_json([[r["item_id"], r["item_hash"]] for r in rows]),
            "items": rows}


def model_section(ref: Any) -> dict[str, Any]:
    """From an `engine.models.resolve.ModelRef`: labels plus the weight hashes."""
    return {"ref": ref.label, "identity": ref.identity, "weights": ref.weights,
            "weights_sha256": sha256_json(ref.weights)}


def environment() -> dict[str, Any]:
    env = environment_section()
    return {"engine_version": env["engine_version"], "packages": env["packages"],
            "lockfile": env["lockfile"], "lockfile_sha256": sha256_json(env["lockfile"]),
            "git_commit": env["git"].get("commit"), "git_dirty": env["git"].get("dirty"),
            "hardware": env["hardware"]}


def _section_hash(name: str, value: Any) -> str:
    if name == "environment" and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in _UNHASHED}
    return sha256_json(value)


def build_proof(spec: EvalSpec, items: list[dict[str, Any]], ref: Any, dataset: dict[str, Any], *,
                backend: Any = None, judge: dict[str, Any] | None = None, eval_id: str | None = None,
                env: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of one eval; `env` defaults to this process's environment."""
    describe = getattr(backend, "describe", None)
    gen = spec.generation
    sections: dict[str, Any] = {
        "suite": {"config": spec.model_dump(mode="json", exclude=_SUITE_EXCLUDE)},
        "dataset": {"ref": f"{dataset['name']}@v{dataset['version']}",
                    "sha256": dataset.get("sha256"), "split": spec.split},
        "items": items_section(items),
        "model": model_section(ref),
        "judge": judge,
        "seeds": {"generation": gen.seed},
        "generation": {"settings": gen.model_dump(mode="json"),
                       "backend": describe() if describe is not None else None},
        "environment": env if env is not None else environment(),
    }
    hashes = {name: _section_hash(name, sections[name]) for name in SECTIONS}
    return {"format": PROOF_FORMAT, "eval_id": eval_id,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **sections, "hashes": hashes, "proof_sha256": sha256_json(hashes)}


def write_proof(eval_dir: Path, record: dict[str, Any]) -> Path:
    path = Path(eval_dir) / PROOF_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_proof(eval_dir: Path) -> dict[str, Any]:
    path = Path(eval_dir) / PROOF_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudioError("eval has no proof record", where=str(path),
                          hint="evals written before proof records existed: re-run `studio eval`") \
            from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudioError(f"cannot read proof record ({exc.__class__.__name__})",
                          where=str(path)) from None
    if not isinstance(record, dict) or record.get("format") != PROOF_FORMAT:
        raise StudioError("not a proof record of this format", where=str(path),
                          hint=f"expected format {PROOF_FORMAT!r}")
    return record


def verify_proof(record: dict[str, Any]) -> list[str]:
    """Sections whose content no longer matches its recorded hash ('proof' for the top hash)."""
    hashes = record.get("hashes") or {}
    bad = [name for name in SECTIONS if _section_hash(name, record.get(name)) != hashes.get(name)]
    if sha256_json(hashes) != record.get("proof_sha256"):
        bad.append("proof")
    return bad


def differing_sections(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Sections whose hashes differ between two records (a base/tuned pair should differ in
    'model' only — and in 'judge' never)."""
    ha, hb = a.get("hashes") or {}, b.get("hashes") or {}
    return [name for name in SECTIONS if ha.get(name) != hb.get(name)]
