"""`studio reproduce RUN_ID`: rebuild a run from its manifest, re-train it and certify the result.

1. `load_original`: the run exists for the tenant, succeeded, and has a manifest.
2. `find_drift`: what the run depended on is compared with what is there now — the dataset
   version (recomputed from its files), the base model (registry hash and its files), tokenizer
   and chat template, every installed package version. Any difference refuses the reproduction
   with the list (StudioError, exit 2) unless `allow_drift`; the engine's git commit and the
   hardware are listed as notes, never refusals.
3. `rebuild_config`: the manifest's resolved config as a `train` config pinned to the exact
   dataset version (or data file) and to the torch thread count the run used.
4. The run is trained again through the same entry point as `studio train` (a new run id), then
   `compare_runs` checks step-by-step loss, grad norm and learning rate, the final metrics and
   every adapter tensor against the original within tolerances (exact on CPU by default).
5. `reproducibility.json` (the certificate) is written into the new run directory and registered
   in the `reproductions` table; a failed certificate exits 3.

The new run's registry `parent_run` stays what its config says (it means "trained on top of that
run's weights" to eval and export); the link to the original is the `reproductions` row, the
certificate and the `reproduces` key added to the new run's manifest.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import manifest as mf
from engine.atomic import write_text_atomic
from engine.config import StudioConfig
from engine.errors import StudioError
from engine.hashing import file_manifest, sha256_file, sha256_json
from engine.models.store import verify_model
from engine.registry import Registry, now_iso, resolve_dataset
from engine.train.launch import train_run
from engine.train.resume import read_inputs
from engine.train.run import base_model_row, new_run_id
from engine.workspace import Workspace

CERTIFICATE = "reproducibility.json"
TOLERANCE_KEYS = ("loss", "grad_norm", "learning_rate", "metrics", "weights")
CPU_TOLERANCES = {k: 0.0 for k in TOLERANCE_KEYS}
# GPU kernels (bf16, atomics in reductions) are not bit-deterministic: starting points, see
# docs/reproducibility.md. Override with --tolerance.
GPU_TOLERANCES = {"loss": 1e-2, "grad_norm": 5e-2, "learning_rate": 0.0, "metrics": 1e-2,
                  "weights": 1e-2}
FINAL_METRICS = ("final_loss", "train_loss", "val_loss", "steps", "train_examples")
SCHEMA = """
CREATE TABLE IF NOT EXISTS reproductions (
    run_id TEXT PRIMARY KEY, original_run TEXT NOT NULL, tenant TEXT NOT NULL,
    passed INTEGER NOT NULL, certificate TEXT NOT NULL, certificate_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


class ReproductionFailed(StudioError):
    """The re-trained run differs from the original beyond the tolerances (exit 3, like a gate)."""

    exit_code = 3


@dataclass
class Original:
    run_id: str
    tenant: str
    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str


@dataclass
class Drift:
    """What changed since the original run: `refusals` stop a reproduction, `notes` never do."""

    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Reproduction:
    run_id: str
    path: Path
    certificate: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.certificate["passed"])


# ---------------------------------------------------------------------------------- tolerances
def parse_tolerances(values: list[str] | None, gpu: bool) -> dict[str, float]:
    """Defaults (exact on CPU) updated by '--tolerance 1e-4' (every key) or 'loss=1e-4' items."""
    out = dict(GPU_TOLERANCES if gpu else CPU_TOLERANCES)
    for raw in values or []:
        for item in filter(None, (part.strip() for part in raw.split(","))):
            key, _, value = item.rpartition("=")
            try:
                number = float(value)
            except ValueError:
                raise StudioError(f"--tolerance {item!r}: {value!r} is not a number",
                                  hint="use e.g. --tolerance 1e-4 or --tolerance loss=1e-4") from None
            if not math.isfinite(number) or number < 0:
                raise StudioError(f"--tolerance {item!r}: must be a finite number >= 0")
            if key and key not in TOLERANCE_KEYS:
                raise StudioError(f"--tolerance: unknown key {key!r}",
                                  hint="keys: " + ", ".join(TOLERANCE_KEYS))
            for k in ([key] if key else TOLERANCE_KEYS):
                out[k] = number
    return out


# ------------------------------------------------------------------------------------ original
def load_original(registry: Registry, run_id: str, tenant: str) -> Original:
    row = registry.get_run(run_id)
    if row is None or row["tenant"] != tenant:
        raise StudioError(f"unknown run {run_id!r} for tenant {tenant!r}",
                          hint="see `studio runs list --tenant TENANT`")
    if row["status"] != "succeeded":
        raise StudioError(f"run {run_id!r} has status {row['status']!r}; only a finished run "
                          "can be reproduced", hint="finish it with `studio train CONFIG --resume RUN_ID`")
    path = Path(row["path"])
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise StudioError(f"run {run_id!r} has no manifest.json", where=str(path))
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return Original(run_id, tenant, path, manifest, sha256_file(manifest_path))


# ------------------------------------------------------------------------------------ the config
def rebuild_config(original: Original) -> tuple[Any, dict[str, Any]]:
    """(a `train` config equal to the run's, pinned; the pins applied) from the manifest."""
    m = original.manifest
    resolved = m["config"]
    train = dict(resolved["train"])
    pins: dict[str, Any] = {}
    inputs = m.get("inputs") or {}
    if train.get("datasets"):  # a mixture: each source pinned to the version it read
        sources = (m.get("dataset") or {}).get("sources") or []
        train["datasets"] = [dict(src) for src in train["datasets"]]
        for i, (src, then) in enumerate(zip(train["datasets"], sources, strict=False)):
            if src.get("dataset") and src["dataset"] != then["ref"]:
                pins[f"train.datasets[{i}].dataset"] = src["dataset"] = then["ref"]
    elif train.get("data"):
        if inputs.get("data_path"):
            pins["train.data"] = train["data"] = inputs["data_path"]
    elif m.get("dataset", {}).get("ref") and train.get("dataset") != m["dataset"]["ref"]:
        pins["train.dataset"] = train["dataset"] = m["dataset"]["ref"]  # 'name' → 'name@vN'
    threads = (m.get("determinism") or {}).get("torch_threads") or (m.get("hardware") or {}).get(
        "torch_threads")
    world = int(_inputs_json(original.path).get("world_size", 1))
    if train.get("threads") is None and threads and world == 1:
        pins["train.threads"] = train["threads"] = int(threads)  # float sums depend on it
    data = {"kind": "train", "tenant": resolved.get("tenant", original.tenant),
            "seed": resolved.get("seed", m.get("seed")), "name": resolved.get("name"), "train": train}
    cfg = StudioConfig.model_validate(data)
    if inputs.get("config_path"):
        cfg._path = Path(inputs["config_path"])
    return cfg, pins


def _inputs_json(run_dir: Path) -> dict[str, Any]:
    return read_inputs(run_dir)


# ----------------------------------------------------------------------------------------- drift
def find_drift(original: Original, cfg: StudioConfig, ws: Workspace, registry: Registry) -> Drift:
    """Every difference between what the run was made from and what is there now."""
    m = original.manifest
    drift = Drift()
    _dataset_drift(m, cfg, registry, drift)
    _model_drift(m, cfg, ws, registry, drift)
    recorded = m.get("lockfile") or {}
    if not recorded:
        drift.notes.append("packages: the manifest has no lockfile; versions not checked")
    else:
        current = mf.package_versions()
        for name in sorted(recorded.keys() | current.keys()):
            if recorded.get(name) != current.get(name):
                drift.refusals.append(f"package {name}: {recorded.get(name) or '(absent)'} → "
                                      f"{current.get(name) or '(absent)'}")
    git_now = mf.git_state()
    git_then = m.get("git") or {}
    if git_then.get("commit") != git_now.get("commit") or git_then.get("dirty") != git_now.get("dirty"):
        drift.notes.append(f"engine source: commit {git_then.get('commit')} dirty={git_then.get('dirty')}"
                           f" → {git_now.get('commit')} dirty={git_now.get('dirty')}")
    hw_then, hw_now = m.get("hardware") or {}, mf.hardware()
    for key in ("cpu", "cpu_count", "gpu", "cuda"):
        if hw_then.get(key) != hw_now.get(key):
            drift.notes.append(f"hardware {key}: {hw_then.get(key)} → {hw_now.get(key)}")
    return drift


def _mixture_drift(recorded: dict[str, Any], cfg: StudioConfig, registry: Registry,
                   drift: Drift) -> None:
    """Each source of a `train.datasets` mixture against the version and hashes it had."""
    then = recorded.get("sources") or []
    if len(then) != len(cfg.train.datasets):
        drift.refusals.append(f"dataset mixture: {len(then)} sources recorded, "
                              f"{len(cfg.train.datasets)} configured")
        return
    for src, old in zip(cfg.train.datasets, then, strict=True):
        if src.data:
            path = Path(cfg.resolve_path(src.data))
            now = sha256_file(path) if path.is_file() else "(missing)"
        else:
            try:
                now = resolve_dataset(registry, cfg.tenant, src.dataset)["sha256"]
            except StudioError:
                now = "(not in the registry)"
        if now != old.get("sha256"):
            drift.refusals.append(f"dataset sha256 ({old.get('ref')}): {old.get('sha256')} → {now}")


def _dataset_drift(m: dict[str, Any], cfg: StudioConfig, registry: Registry, drift: Drift) -> None:
    recorded = m.get("dataset") or {}
    spec = cfg.train
    if spec.datasets:
        _mixture_drift(recorded, cfg, registry, drift)
        return
    if spec.data:
        path = Path(cfg.resolve_path(spec.data))
        if not path.is_file():
            drift.refusals.append(f"dataset file {path.name}: missing")
            return
        now = sha256_file(path)
        if now != recorded.get("sha256"):
            drift.refusals.append(f"dataset sha256 ({path.name}): {recorded.get('sha256')} → {now}")
        return
    try:
        row = resolve_dataset(registry, cfg.tenant, spec.dataset)
    except StudioError:
        drift.refusals.append(f"dataset {spec.dataset}: no longer in the registry")
        return
    files_now = file_manifest(Path(row["path"]))
    now = sha256_json(files_now)
    if now != recorded.get("sha256") or row["sha256"] != recorded.get("sha256"):
        drift.refusals.append(f"dataset sha256 ({spec.dataset}): {recorded.get('sha256')} → {now}")
    files_then = recorded.get("files") or {}
    for name in sorted(files_then.keys() | files_now.keys()):
        if files_then.get(name) != files_now.get(name):
            drift.refusals.append(f"dataset file {name}: {files_then.get(name) or '(absent)'} → "
                                  f"{files_now.get(name) or '(absent)'}")


def _model_drift(m: dict[str, Any], cfg: StudioConfig, ws: Workspace, registry: Registry,
                 drift: Drift) -> None:
    recorded = m.get("base_model") or {}
    try:
        row = base_model_row(cfg, registry)
    except StudioError as exc:
        drift.refusals.append(f"base model {recorded.get('name')}: {exc.what}")
        return
    if row["manifest_sha256"] != recorded.get("manifest_sha256"):
        drift.refusals.append(f"base model sha256 ({row['name']}): {recorded.get('manifest_sha256')}"
                              f" → {row['manifest_sha256']}")
    if not recorded.get("parent_run"):
        try:
            changed = verify_model(ws, row["name"])
        except StudioError as exc:
            changed = [exc.what]
        for name in changed:
            drift.refusals.append(f"base model file {name}: differs from the model's manifest")
    tok_then = m.get("tokenizer")
    if not tok_then:
        drift.notes.append("tokenizer: not recorded in the manifest; not checked")
        return
    tok_now = mf.tokenizer_hashes(row["path"])
    if tok_now["sha256"] != tok_then.get("sha256"):
        drift.refusals.append(f"tokenizer sha256: {tok_then.get('sha256')} → {tok_now['sha256']}")
    if tok_now["chat_template_sha256"] != tok_then.get("chat_template_sha256"):
        drift.refusals.append(f"chat template sha256: {tok_then.get('chat_template_sha256')} → "
                              f"{tok_now['chat_template_sha256']}")


# ------------------------------------------------------------------------------------ comparing
def _steps(run_dir: Path) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    """Per training step its logged row; and the last eval row (eval_loss), if any."""
    steps: dict[int, dict[str, Any]] = {}
    last_eval = None
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if "loss" in row:
                steps[int(row["step"])] = row
            elif "eval_loss" in row:
                last_eval = row
    return steps, last_eval


def _max_abs(pairs: list[tuple[Any, Any]]) -> tuple[float | None, list[str]]:
    worst: float | None = None
    bad: list[str] = []
    for a, b in pairs:
        if a is None and b is None:
            continue
        if a is None or b is None:
            bad.append("missing")
            continue
        d = abs(float(a) - float(b))
        if math.isnan(d):
            bad.append("nan")
            continue
        worst = d if worst is None else max(worst, d)
    return worst, bad


def _check(name: str, diff: float | None, tol: float, problems: list[str], **extra: Any) -> dict[str, Any]:
    passed = not problems and (diff is None or diff <= tol)
    return {"passed": passed, "max_abs_diff": diff, "tolerance": tol, "problems": problems, **extra}


def compare_runs(original: Path, reproduced: Path, orig_manifest: dict[str, Any],
                 new_manifest: dict[str, Any], tol: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The certificate's checks: trajectory (loss, grad norm, lr), final metrics, weights."""
    a, a_eval = _steps(original)
    b, b_eval = _steps(reproduced)
    problems = [] if a.keys() == b.keys() else [f"steps logged: {len(a)} vs {len(b)}"]
    common = sorted(a.keys() & b.keys())
    checks: dict[str, dict[str, Any]] = {}
    for key in ("loss", "grad_norm", "learning_rate"):
        diff, bad = _max_abs([(a[s].get(key), b[s].get(key)) for s in common])
        checks[key] = _check(key, diff, tol[key], problems + [f"{key}: {x}" for x in sorted(set(bad))],
                             steps=len(common))
    ma, mb = orig_manifest.get("metrics") or {}, new_manifest.get("metrics") or {}
    pairs = [(ma.get(k), mb.get(k)) for k in FINAL_METRICS]
    if a_eval or b_eval:
        pairs.append(((a_eval or {}).get("eval_loss"), (b_eval or {}).get("eval_loss")))
    diff, bad = _max_abs(pairs)
    checks["metrics"] = _check("metrics", diff, tol["metrics"], [f"final metric {x}" for x in set(bad)],
                               compared={k: [ma.get(k), mb.get(k)] for k in FINAL_METRICS})
    checks["weights"] = _compare_weights(original, reproduced, orig_manifest, new_manifest,
                                         tol["weights"])
    return checks


def _compare_weights(original: Path, reproduced: Path, ma: dict[str, Any], mb: dict[str, Any],
                     tol: float) -> dict[str, Any]:
    from safetensors.torch import load_file

    out_a = original / (ma.get("outputs") or {}).get("dir", "adapter")
    out_b = reproduced / (mb.get("outputs") or {}).get("dir", "adapter")
    files = sorted({p.relative_to(out_a).as_posix() for p in out_a.rglob("*.safetensors")}
                   | {p.relative_to(out_b).as_posix() for p in out_b.rglob("*.safetensors")})
    problems: list[str] = []
    worst: float | None = None
    identical_files = 0
    tensors = identical_tensors = 0
    if not files:
        problems.append("no .safetensors weights in either run")
    for name in files:
        fa, fb = out_a / name, out_b / name
        if not (fa.is_file() and fb.is_file()):
            problems.append(f"{name}: present in one run only")
            continue
        identical_files += sha256_file(fa) == sha256_file(fb)
        ha, hb = mf.safetensors_tensor_hashes(fa), mf.safetensors_tensor_hashes(fb)
        ta, tb = load_file(str(fa)), load_file(str(fb))
        if ta.keys() != tb.keys():
            problems.append(f"{name}: tensor names differ")
        for key in sorted(ta.keys() & tb.keys()):
            tensors += 1
            identical_tensors += ha.get(key) == hb.get(key)
            if ta[key].shape != tb[key].shape:
                problems.append(f"{name}:{key}: shapes differ")
                continue
            d = float((ta[key].double() - tb[key].double()).abs().max()) if ta[key].numel() else 0.0
            worst = d if worst is None else max(worst, d)
    return _check("weights", worst, tol, problems, files=len(files), identical_files=identical_files,
                  tensors=tensors, identical_tensors=identical_tensors,
                  bit_identical=bool(files) and identical_files == len(files) and not problems)


# ------------------------------------------------------------------------------------- the verb
def reproduce(ws: Workspace, registry: Registry, run_id: str, tenant: str, *,
              allow_drift: bool = False, tolerances: list[str] | None = None,
              progress: Any = None, on_drift: Any = None) -> Reproduction:
    """Re-train `run_id` from its manifest and certify the result (see the module docstring)."""
    original = load_original(registry, run_id, tenant)
    cfg, pins = rebuild_config(original)
    drift = find_drift(original, cfg, ws, registry)
    if drift.refusals and not allow_drift:
        shown = "\n".join(f"  {d}" for d in drift.refusals[:40])
        if len(drift.refusals) > 40:
            shown += f"\n  … {len(drift.refusals) - 40} more"
        raise StudioError(f"run {run_id!r} cannot be reproduced: its inputs or environment "
                          f"changed:\n{shown}", where=str(original.path / "manifest.json"),
                          hint="restore the recorded inputs/packages, or pass --allow-drift to "
                               "re-train anyway (the certificate then fails its inputs check)")
    if on_drift is not None and (drift.refusals or drift.notes):
        on_drift(drift)
    gpu = bool((original.manifest.get("hardware") or {}).get("gpu")) or _cuda()
    tol = parse_tolerances(tolerances, gpu)
    world = int(_inputs_json(original.path).get("world_size", 1))
    new_id = new_run_id()
    res = train_run(cfg, ws, registry, progress=progress, run_id=new_id,
                    nproc=world if world > 1 else None)
    new_dir = ws.run_dir(tenant, new_id) if res is None else Path(res.path)
    new_manifest_path = new_dir / "manifest.json"
    new_manifest = json.loads(new_manifest_path.read_text(encoding="utf-8"))
    new_manifest["reproduces"] = {"run_id": run_id, "manifest_sha256": original.manifest_sha256}
    write_text_atomic(new_manifest_path, json.dumps(new_manifest, indent=2, sort_keys=True) + "\n")

    checks = {"inputs": {"passed": not drift.refusals, "differences": drift.refusals,
                         "notes": drift.notes, "allow_drift": allow_drift}}
    checks.update(compare_runs(original.path, new_dir, original.manifest, new_manifest, tol))
    passed = all(c["passed"] for c in checks.values())
    cert = {
        "kind": "studio.reproducibility/v1",
        "passed": passed,
        "original_run": run_id,
        "reproduction_run": new_id,
        "tenant": tenant,
        "created_at": now_iso(),
        "device": "cuda" if _cuda() else "cpu",
        "tolerances": tol,
        "pinned": pins,
        "checks": checks,
        "manifests": {"original_sha256": original.manifest_sha256,
                      "reproduction_sha256": sha256_file(new_manifest_path)},
        "adapter_sha256": {"original": (original.manifest.get("metrics") or {}).get("adapter_sha256"),
                           "reproduction": (new_manifest.get("metrics") or {}).get("adapter_sha256")},
        "versions": {"original": original.manifest.get("packages"),
                     "reproduction": new_manifest.get("packages"),
                     "engine": [original.manifest.get("engine_version"),
                                new_manifest.get("engine_version")]},
    }
    cert_path = new_dir / CERTIFICATE
    write_text_atomic(cert_path, json.dumps(cert, indent=2, sort_keys=True) + "\n")
    record(registry.path, new_id, run_id, tenant, passed, cert_path)
    return Reproduction(new_id, new_dir, cert)


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


# ------------------------------------------------------------------------------------- registry
def record(registry_path: Path, run_id: str, original: str, tenant: str, passed: bool,
           cert_path: Path) -> None:
    with closing(sqlite3.connect(registry_path, timeout=30)) as db, db:
        db.executescript(SCHEMA)
        db.execute("INSERT OR REPLACE INTO reproductions VALUES (?,?,?,?,?,?,?)",
                   (run_id, original, tenant, int(passed), str(cert_path), sha256_file(cert_path),
                    now_iso()))


def list_reproductions(registry_path: Path, tenant: str | None = None) -> list[dict[str, Any]]:
    """Rows of the `reproductions` table (empty when it does not exist yet)."""
    with closing(sqlite3.connect(registry_path, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='reproductions'"
                      ).fetchone() is None:
            return []
        sql, args = "SELECT * FROM reproductions", ()
        if tenant is not None:
            sql, args = sql + " WHERE tenant=?", (tenant,)
        return [dict(r) for r in db.execute(sql + " ORDER BY created_at", args)]
