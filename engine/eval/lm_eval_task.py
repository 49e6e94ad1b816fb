"""Standard benchmarks in an eval suite: a task with `lm_eval` runs lm-eval-harness in-process.

`prepare` checks a task before anything runs: lm-eval is installed, `include_path` (a folder of
task YAMLs) and `dataset_dir` (staged datasets) exist and pass the job's path policy, every task
name is known, and the local data files the task YAMLs name pass the path policy too.
`LmEvalModel` is one model of the eval as lm-eval's `hf` model: the base weights plus, for a run,
its LoRA adapter (`peft`), loaded once per model and reused by every lm-eval task of the suite.
`run_task` calls `lm_eval.simple_evaluate` (samples logged, seeds fixed, no request cache) with
`dataset_dir` as the working directory — so a task's `dataset_path: owner/name` loads the copy
staged at `<dataset_dir>/owner/name` — and writes the task's eval directory like every suite
task: one outputs.jsonl row per lm-eval sample, keyed `<lm-eval task>:<doc_id>`, its item hash
over the document hash, the request arguments (the exact prompt and continuations) and the
target, so two models' evals pair item by item in `studio diff`. The item score is the chosen
per-sample metric (default: each task's first, e.g. acc or exact_match); lm-eval's own results
are kept in summary.json beside the score, which is their mean over all items.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.progress import Progress

from engine.config import EvalSpec, TaskSpec
from engine.errors import StudioError
from engine.eval.items import new_eval_id
from engine.eval.proof import build_proof, write_proof
from engine.hashing import sha256_json
from engine.models.resolve import ModelRef
from engine.registry import Registry
from engine.workspace import Workspace

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")
INSTALL_HINT = "install the lmeval extra: pip install 'expert-studio[lmeval]'"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass
class LmEvalPlan:
    """A checked lm_eval task: resolved folders and lm-eval's task manager."""

    spec: TaskSpec
    where: str
    include_path: Path | None
    dataset_dir: Path | None
    task_manager: Any


# ------------------------------------------------------------------------------------ checking
def _folder(value: str | None, field: str, resolve: Callable[[str], Path]) -> Path | None:
    if value is None:
        return None
    path = Path(resolve(value))
    if not path.is_dir():
        raise StudioError("folder not found", where=field,
                          hint="paths are relative to the config file's folder")
    return path


def _data_strings(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _data_strings(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _data_strings(v)]
    return [obj] if isinstance(obj, str) else []


class _AnyTagLoader(yaml.SafeLoader):
    """A safe YAML loader that reads lm-eval's `!function` (any `!tag`) values as null."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _check_data_paths(include: Path, data_root: Path, resolve: Callable[[str], Path],
                      where: str) -> None:
    """The local files a task YAML's dataset_path / dataset_kwargs name go through the path
    policy (relative ones resolve where lm-eval opens them: in dataset_dir or the cwd)."""
    for yaml_file in sorted(include.rglob("*.yaml")):
        try:
            doc = yaml.load(yaml_file.read_text(encoding="utf-8"), Loader=_AnyTagLoader)
        except Exception:  # lm-eval reports YAML it cannot read when it loads the task
            continue
        if not isinstance(doc, dict):
            continue
        values = _data_strings(doc.get("dataset_kwargs"))
        if isinstance(doc.get("dataset_path"), str):
            values.append(doc["dataset_path"])
        for value in values:
            path = Path(value).expanduser()
            path = path if path.is_absolute() else data_root / path
            if not path.exists():
                continue  # a hub id or builder name (json, parquet), not a file here
            try:
                resolve(str(path))
            except StudioError as exc:
                raise StudioError(f"{yaml_file.name}: {exc.what}", where=f"{where}.include_path",
                                  hint=exc.hint) from None


def prepare(spec: TaskSpec, where: str, resolve: Callable[[str], Path]) -> LmEvalPlan:
    """Check one lm_eval task (StudioError naming the field); `resolve` is the config's
    `resolve_path` (config-relative, the job's path policy)."""
    assert spec.lm_eval is not None
    lm = spec.lm_eval
    try:
        # lazy: lm-eval is an optional extra, needed only by suites with lm_eval tasks
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise StudioError("lm-eval-harness is not installed", where=f"{where}.lm_eval",
                          hint=INSTALL_HINT) from None
    include = _folder(lm.include_path, f"{where}.lm_eval.include_path", resolve)
    data_dir = _folder(lm.dataset_dir, f"{where}.lm_eval.dataset_dir", resolve)
    if include is not None:
        _check_data_paths(include, data_dir or Path.cwd(), resolve, f"{where}.lm_eval")
    with _quiet():
        manager = TaskManager(include_path=str(include) if include else None)
    known = set(manager.all_tasks)
    unknown = [t for t in lm.tasks if t not in known]
    if unknown:
        raise StudioError(f"unknown lm-eval task {unknown[0]!r}", where=f"{where}.lm_eval.tasks",
                          hint="built-in names as `lm_eval ls tasks` lists them, or a task: name "
                          "defined by a YAML in include_path")
    return LmEvalPlan(spec, where, include, data_dir, manager)


# ------------------------------------------------------------------------------------- running
class _quiet:
    """lm-eval's INFO logging off for a call (it names tasks and paths, never needed here)."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("lm_eval")
        self.level = self.logger.level
        self.logger.setLevel(logging.WARNING)

    def __exit__(self, *exc: Any) -> None:
        self.logger.setLevel(self.level)


class LmEvalModel:
    """One model of the eval as lm-eval's `hf` model (base + adapter), loaded on first use."""

    def __init__(self, ref: ModelRef):
        # lazy: torch only for suites with lm_eval tasks (CLI start-up time)
        import torch

        self.ref = ref
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = "bfloat16" if self.device == "cuda" else "float32"  # bf16 on CPU is ~4x slower
        self._lm: Any = None

    def model_args(self, batch_size: int) -> dict[str, Any]:
        """What `simple_evaluate(model="hf", model_args=...)` would be given for this model."""
        args: dict[str, Any] = {"pretrained": str(self.ref.model_dir), "dtype": self.dtype,
                                "device": self.device, "batch_size": batch_size}
        if self.ref.adapter_dir is not None:
            args["peft"] = str(self.ref.adapter_dir)
        return args

    def lm(self, batch_size: int) -> Any:
        if self._lm is None:
            # lazy: lm-eval (and torch through it) only for suites with lm_eval tasks
            from lm_eval.models.huggingface import HFLM

            with _quiet():
                self._lm = HFLM(**self.model_args(batch_size))
        self._lm.batch_size_per_gpu = batch_size  # per task (eval.generation.batch_size)
        return self._lm

    def describe(self, spec: EvalSpec, lm_spec: Any) -> dict[str, Any]:
        # lazy: versions of the optional extra and the ML stack, for the proof record
        import lm_eval
        import torch
        import transformers

        # the adapter is in the proof's model section: base and tuned differ there only
        return {"backend": "lm-eval-harness", "lm_eval": lm_eval.__version__,
                "transformers": transformers.__version__, "torch": torch.__version__,
                "model": "hf", "device": self.device, "dtype": self.dtype,
                "batch_size": spec.generation.batch_size,
                "num_fewshot": lm_spec.num_fewshot, "apply_chat_template": lm_spec.apply_chat_template}


class _Described:
    def __init__(self, record: dict[str, Any]):
        self.record = record

    def describe(self) -> dict[str, Any]:
        return self.record


class _ProgressLine:
    """A rich progress line per batch of lm-eval requests (count and request type), in place of
    the hf model's own tqdm bar."""

    def __init__(self, lm: Any, progress: Progress | None, label: str):
        self.lm, self.progress, self.label = lm, progress, label

    def __enter__(self) -> None:
        if self.progress is None:
            return
        for name in REQUEST_TYPES:
            original = getattr(self.lm, name)
            setattr(self.lm, name, self._wrap(name, original))

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(requests: list[Any], *args: Any, **kwargs: Any) -> Any:
            assert self.progress is not None
            tid = self.progress.add_task(f"{self.label} {name}"[:48], total=len(requests))
            kwargs.setdefault("disable_tqdm", True)
            try:
                return original(requests, *args, **kwargs)
            finally:
                self.progress.update(tid, completed=len(requests))
        return call

    def __exit__(self, *exc: Any) -> None:
        for name in REQUEST_TYPES:
            self.lm.__dict__.pop(name, None)


def evaluate(plan: LmEvalPlan, spec: EvalSpec, model: LmEvalModel, *,
             progress: Progress | None = None, label: str = "lm-eval") -> dict[str, Any]:
    """lm-eval's result of one task for one model (samples logged)."""
    # lazy: lm-eval is an optional extra, needed only by suites with lm_eval tasks
    from lm_eval import simple_evaluate

    lm_spec = plan.spec.lm_eval
    assert lm_spec is not None
    seed = spec.generation.seed
    lm = model.lm(spec.generation.batch_size)
    cwd = Path.cwd()
    try:
        if plan.dataset_dir is not None:
            os.chdir(plan.dataset_dir)  # dataset_path 'owner/name' → <dataset_dir>/owner/name
        with _quiet(), _ProgressLine(lm, progress, label):
            result = simple_evaluate(
                model=lm, tasks=list(lm_spec.tasks), task_manager=plan.task_manager,
                num_fewshot=lm_spec.num_fewshot, limit=spec.limit, log_samples=True,
                apply_chat_template=lm_spec.apply_chat_template, cache_requests=False,
                use_cache=None, write_out=False, random_seed=seed, numpy_random_seed=seed,
                torch_random_seed=seed, fewshot_random_seed=seed)
    except (ConnectionError, FileNotFoundError) as exc:  # offline: the data is not staged
        raise StudioError(f"lm-eval could not load a task's data offline "
                          f"({exc.__class__.__name__})", where=f"{plan.where}.lm_eval.tasks",
                          hint="stage the dataset under lm_eval.dataset_dir (as owner/name) or "
                          "point the task YAML's data_files at local files; see docs/eval.md, "
                          "Staging benchmark data") from None
    finally:
        os.chdir(cwd)
    if not result or not result.get("samples"):
        raise StudioError("lm-eval returned no samples", where=f"{plan.where}.lm_eval.tasks")
    return result


# ------------------------------------------------------------------------------------- results
def plain(value: Any) -> Any:
    """JSON-safe copy (tuples become lists, other objects their str)."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def _first_metric(config: dict[str, Any], sample: dict[str, Any]) -> str | None:
    metrics = config.get("metric_list") or []
    if metrics and isinstance(metrics[0], dict) and metrics[0].get("metric"):
        return str(metrics[0]["metric"])
    return (sample.get("metrics") or [None])[0]


def _score(value: Any, metric: str, leaf: str, where: str) -> float:
    if isinstance(value, bool) or isinstance(value, (int, float)):
        score = float(value)
        if 0.0 <= score <= 1.0:
            return score
        raise StudioError(f"metric {metric!r} of lm-eval task {leaf!r} is not a 0-1 item score",
                          where=f"{where}.lm_eval.metric",
                          hint="choose a per-item metric in [0, 1], e.g. acc or exact_match")
    raise StudioError(f"metric {metric!r} of lm-eval task {leaf!r} gives no per-item number",
                      where=f"{where}.lm_eval.metric",
                      hint="choose a per-item metric such as acc, acc_norm or exact_match")


def _texts(output_type: str, args: list[Any], filtered: list[Any], target: Any) -> tuple[str, str]:
    """(the model's answer, the reference) as text for the report."""
    if output_type == "multiple_choice":
        choices = [str(a[1]).strip() if len(a) > 1 else "" for a in args]
        lls = [r[0] if isinstance(r, list) and r else r for r in filtered]
        best = max(range(len(lls)), key=lambda i: float(lls[i])) if lls else None
        out = choices[best] if best is not None else ""
        if isinstance(target, int) and 0 <= target < len(choices):
            return out, choices[target]
        return out, target if isinstance(target, str) else json.dumps(target)
    if filtered and all(isinstance(r, str) for r in filtered):
        out = filtered[0] if len(filtered) == 1 else json.dumps(filtered, ensure_ascii=False)
    else:
        out = json.dumps(filtered)
    return out, target if isinstance(target, str) else json.dumps(target)


def rows_of(result: dict[str, Any], lm_spec: Any, where: str) -> tuple[list[dict[str, Any]],
                                                                       dict[str, Any]]:
    """outputs.jsonl rows (every sample of every leaf task, by task name then doc id) and what
    was chosen per leaf task: {leaf: {metric, filter, output_type, lm_eval_score}}."""
    rows: list[dict[str, Any]] = []
    chosen: dict[str, Any] = {}
    for leaf in sorted(result["samples"]):
        samples = result["samples"][leaf]
        if not samples:
            continue
        config = result.get("configs", {}).get(leaf, {})
        filters = list(dict.fromkeys(s.get("filter", "none") for s in samples))
        flt = lm_spec.filter or filters[0]
        if flt not in filters:
            raise StudioError(f"lm-eval task {leaf!r} has no filter {flt!r}",
                              where=f"{where}.lm_eval.filter", hint="its filters: " + ", ".join(filters))
        picked = sorted((s for s in samples if s.get("filter", "none") == flt),
                        key=lambda s: int(s["doc_id"]))
        metric = lm_spec.metric or _first_metric(config, picked[0])
        if metric is None or metric not in picked[0]:
            raise StudioError(f"lm-eval task {leaf!r} has no per-sample metric {metric!r}",
                              where=f"{where}.lm_eval.metric",
                              hint="its metrics: " + ", ".join(picked[0].get("metrics") or []))
        output_type = str(config.get("output_type", ""))
        others = [m for m in picked[0].get("metrics") or [] if m != metric]
        for s in picked:
            args, target = plain(s.get("arguments", [])), plain(s.get("target"))
            filtered = plain(s.get("filtered_resps", []))
            context = str(args[0][0]) if args and args[0] else ""
            output, reference = _texts(output_type, args, filtered, target)
            score = _score(s[metric], metric, leaf, where)
            grades = [{"grader": metric, "score": score, "passed": None}]
            grades += [{"grader": m, "score": float(s[m]), "passed": None} for m in others
                       if isinstance(s.get(m), (int, float))]
            item_hash = sha256_json({"task": leaf, "doc_hash": s.get("doc_hash"),
                                     "arguments": args, "target": target})
            rows.append({
                "item_id": f"{leaf}:{int(s['doc_id'])}", "item_hash": item_hash,
                "prompt": [{"role": "user", "content": context}], "reference": reference,
                "meta": {"lm_eval_task": leaf, "doc_id": int(s["doc_id"])},
                "output": output, "score": score, "grades": grades,
                "lm_eval": {"doc": plain(s.get("doc")), "target": target, "arguments": args,
                            "resps": plain(s.get("resps")), "filtered_resps": filtered,
                            "filter": flt, "metrics": {m: plain(s.get(m)) for m in
                                                       [metric, *others]},
                            "doc_hash": s.get("doc_hash"), "prompt_hash": s.get("prompt_hash")},
            })
        own = result.get("results", {}).get(leaf, {}).get(f"{metric},{flt}")
        chosen[leaf] = {"metric": metric, "filter": flt, "output_type": output_type,
                        "lm_eval_score": own if isinstance(own, (int, float)) else None,
                        "n": len(picked)}
    if not rows:
        raise StudioError("lm-eval returned no samples", where=f"{where}.lm_eval.tasks")
    return rows, chosen


def source_of(result: dict[str, Any], rows: list[dict[str, Any]], lm_spec: Any) -> dict[str, Any]:
    """The 'dataset' of an lm-eval task: its task configs and documents, by content hash."""
    configs = {k: {kk: vv for kk, vv in v.items() if kk != "metadata"}
               for k, v in (result.get("configs") or {}).items()}
    configs_text = _ADDRESS.sub("", json.dumps(configs, default=str, sort_keys=True))
    sha = sha256_json({"configs": configs_text,
                       "docs": [[r["item_id"], r["lm_eval"]["doc_hash"]] for r in rows]})
    name = "lm_eval:" + "+".join(lm_spec.tasks)
    return {"ref": f"{name}@v{sha[:12]}", "name": name, "version": sha[:12], "sha256": sha,
            "split": None}


def _lm_eval_record(result: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    def numbers(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if isinstance(v, (int, float, str))}

    return {"results": {k: numbers(v) for k, v in (result.get("results") or {}).items()},
            "versions": plain(result.get("versions")), "n-shot": plain(result.get("n-shot")),
            "n-samples": plain(result.get("n-samples")), "chosen": chosen,
            "lm_eval_version": result.get("lm_eval_version")}


def run_task(plan: LmEvalPlan, eval_spec: EvalSpec, ws: Workspace, registry: Registry, *,
             tenant: str, model_ref: str, model: LmEvalModel, task_name: str, guard: bool,
             progress: Progress | None = None, suite_name: str | None = None
             ) -> tuple[str, Path, dict[str, Any]]:
    """Run lm-eval for one model, write evals/<id>/ and register it: (eval id, dir, summary)."""
    lm_spec = plan.spec.lm_eval
    assert lm_spec is not None
    result = evaluate(plan, eval_spec, model, progress=progress,
                      label=f"{task_name} {model_ref}"[:40])
    rows, chosen = rows_of(result, lm_spec, plan.where)
    source = source_of(result, rows, lm_spec)
    scores = [r["score"] for r in rows]
    names = list(dict.fromkeys(g["grader"] for r in rows for g in r["grades"]))
    graders = []
    for name in names:
        vals = [g["score"] for r in rows for g in r["grades"] if g["grader"] == name]
        if len(vals) == len(rows):  # a metric every sample has
            graders.append({"name": name, "type": "lm_eval", "score": sum(vals) / len(vals),
                            "pass_rate": None})
    eval_id = new_eval_id()
    out_dir = ws.eval_dir(tenant, eval_id)
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    tmp_dir.mkdir(parents=True, mode=0o700)
    written = tmp_dir  # as in suite.run_task: nothing half-written survives an error or signal
    try:
        with (tmp_dir / "outputs.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        grader = {"type": "lm_eval", "metric": lm_spec.metric, "filter": lm_spec.filter,
                  "metrics": {k: v["metric"] for k, v in chosen.items()},
                  "filters": {k: v["filter"] for k, v in chosen.items()}}
        summary = {
            "eval_id": eval_id, "model_ref": model_ref, "model_identity": model.ref.identity,
            "suite": suite_name, "task": task_name, "guard": guard,
            "dataset": source["ref"], "dataset_sha256": source["sha256"], "split": None,
            "n": len(rows), "score": sum(scores) / len(scores), "grader": grader,
            "graders": graders, "slice_key": eval_spec.slice_key,
            "slice_keys": [eval_spec.slice_key] if eval_spec.slice_key else [],
            "settings": eval_spec.generation.model_dump(),
            "cache": {"enabled": False, "hits": 0, "misses": len(rows), "corrupt": 0},
            "lm_eval": _lm_eval_record(result, chosen),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        backend = _Described(model.describe(eval_spec, lm_spec))
        proof = build_proof(eval_spec, rows, model.ref, source, backend=backend, eval_id=eval_id)
        write_proof(tmp_dir, proof)
        summary["proof_sha256"] = proof["proof_sha256"]
        (tmp_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        os.rename(tmp_dir, out_dir)
        written = out_dir
        registry.put_eval(eval_id, tenant, "eval", model_ref, source["ref"], out_dir,
                          {"n": summary["n"], "score": summary["score"], "suite": suite_name,
                           "task": task_name, "guard": guard})
    except BaseException:
        shutil.rmtree(written, ignore_errors=True)
        raise
    return eval_id, out_dir, summary
