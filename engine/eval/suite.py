"""Eval suites: the tasks of `eval.suite` — their items, prompts and graders — each run as one eval.

A task takes its items from a dataset version's split (like a plain eval), from any JSONL file,
or from a built-in suite (`builtin:guard`, engine/eval/guard). A JSONL line is either OpenAI chat
(`{"messages": [...]}`, cut before the final assistant turn, or with an `ideal`/`reference`) or
`{"prompt"|"input": text or messages, "ideal"|"reference": text, "id"?, "meta"?, ...}`; other
top-level keys join `meta` (slice keys). An item id is the record's `id`, else `<file name>:<line>`;
its hash is sha256 of the canonical JSON of the final prompt and the reference (as in
`engine.eval.items.load_items`, so a task without a template pairs with a plain eval).

An optional Jinja prompt template (sandboxed, undefined fields are errors) turns an item into
[system] + one user message; `{{ item.input }}` is the item's last user message, `{{ item.x }}`
any field of the source line or of its meta. Each task is generated through the same cached path
as `run_eval` (engine/eval/cache.py), graded by every grader of the task (the first one gives the
task's score, the others are reported), and written as its own eval directory (summary.json,
outputs.jsonl, proof.json), so `studio diff` compares two models task by task. A task with
`lm_eval` runs lm-eval-harness tasks instead (engine/eval/lm_eval_task.py): its items, prompts
and per-item scores are lm-eval's samples, written the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.progress import Progress

from engine.config import EvalSpec, GenerationSpec, GraderSpec, TaskSpec
from engine.console import out
from engine.errors import StudioError
from engine.eval import guard, lm_eval_task
from engine.eval.cache import GenerationCache, cached_generate
from engine.eval.items import EvalResult, load_items, new_eval_id
from engine.eval.proof import build_proof, write_proof
from engine.generation.factory import make_backend, open_judge
from engine.generation.protocol import close_backend
from engine.grading.graders import MODEL_TYPES, build_grader, grade_batch
from engine.hashing import sha256_file, sha256_json
from engine.models.resolve import ModelRef, resolve_model
from engine.registry import Registry, resolve_dataset
from engine.workspace import Workspace

BUILTINS = {guard.GUARD_REF: guard}
ROLES = ("system", "developer", "user", "assistant", "tool")
_SOURCE_KEYS = {"id", "messages", "prompt", "input", "ideal", "reference", "meta"}
_MISSING = re.compile(r"'([A-Za-z_][A-Za-z0-9_]{0,63})'(?: is undefined)?$")


@dataclass
class Task:
    """A loaded task: its items (item_id, item_hash, prompt, reference, meta) in source order."""

    name: str
    spec: TaskSpec
    eval_spec: EvalSpec  # the eval settings of this task (defaults merged): proof + summary
    graders: list[GraderSpec]
    slice_keys: list[str]
    source: dict[str, Any]  # ref, name, version, sha256, split
    items: list[dict[str, Any]]
    where: str  # the config field path, e.g. eval.suite.tasks[1]
    lm_eval: lm_eval_task.LmEvalPlan | None = None  # an lm-eval task: items come from lm-eval

    @property
    def guard(self) -> bool:
        return self.spec.guard

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class TaskResult(EvalResult):
    task: str = ""
    guard: bool = False
    graders: list[dict[str, Any]] = field(default_factory=list)  # per grader: name, score, pass_rate


# ------------------------------------------------------------------------------------ reading
def _messages(value: Any, where: str, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise StudioError(f"'{key}' must be a non-empty list of messages", where=where)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise StudioError(f"{key}[{i}] needs a role ({', '.join(ROLES)})", where=where)
        if not isinstance(m.get("content"), str):
            raise StudioError(f"{key}[{i}].content must be text", where=where)
        role = "system" if m["role"] == "developer" else m["role"]  # OpenAI's newer name
        out.append({"role": role, "content": m["content"]})
    return out


def _text(rec: dict[str, Any], keys: tuple[str, str], where: str) -> Any:
    given = [k for k in keys if k in rec]
    if len(given) > 1:
        raise StudioError(f"give one of '{keys[0]}' or '{keys[1]}', not both", where=where)
    return rec[given[0]] if given else None


def parse_line(rec: Any, where: str, default_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One JSONL record → (item, its template fields); StudioError naming `where` (file:line)."""
    if not isinstance(rec, dict):
        raise StudioError("line must be a JSON object", where=where)
    reference = _text(rec, ("ideal", "reference"), where)
    if isinstance(reference, list) and len(reference) == 1:  # OpenAI evals: a list of ideals
        reference = reference[0]
    if reference is not None and not isinstance(reference, str):
        raise StudioError("'ideal'/'reference' must be text", where=where,
                          hint="one reference per line; grade alternatives with a regex grader")
    if "messages" in rec:
        if _text(rec, ("prompt", "input"), where) is not None:
            raise StudioError("give 'messages' or 'prompt'/'input', not both", where=where)
        prompt = _messages(rec["messages"], where, "messages")
        if reference is None:
            last = max((i for i, m in enumerate(prompt) if m["role"] == "assistant"), default=None)
            if last is None:
                raise StudioError("line has no assistant answer and no 'ideal'/'reference'",
                                  where=where)
            prompt, reference = prompt[:last], prompt[last]["content"]
    else:
        raw = _text(rec, ("prompt", "input"), where)
        if raw is None:
            raise StudioError("line needs 'messages', or 'prompt'/'input' with 'ideal'/'reference'",
                              where=where)
        prompt = ([{"role": "user", "content": raw}] if isinstance(raw, str)
                  else _messages(raw, where, "input" if "input" in rec else "prompt"))
        if reference is None:
            raise StudioError("line has no 'ideal'/'reference'", where=where)
    if not prompt:
        raise StudioError("line has an empty prompt (nothing before the assistant answer)",
                          where=where)
    rid = rec.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == ""):
        raise StudioError("'id' must be a non-empty string or an integer", where=where)
    meta = rec.get("meta", {})
    if not isinstance(meta, dict):
        raise StudioError("'meta' must be an object", where=where)
    meta = {**{k: v for k, v in rec.items() if k not in _SOURCE_KEYS}, **meta}
    item = {"item_id": str(rid) if rid is not None else default_id, "prompt": prompt,
            "reference": reference, "meta": meta}
    return item, rec


def read_jsonl(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(item, fields) per non-blank line of a JSONL file, in file order; ids must be unique."""
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    seen: dict[str, int] = {}
    try:
        f = path.open(encoding="utf-8")
    except OSError as exc:
        raise StudioError(f"cannot read task file ({exc.__class__.__name__})", where=str(path)) from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StudioError(f"line is not valid JSON ({exc.msg}, column {exc.colno})",
                                  where=where) from None
            item, fields = parse_line(rec, where, f"{path.name}:{lineno}")
            if item["item_id"] in seen:
                raise StudioError(f"duplicate id (first on line {seen[item['item_id']]})", where=where,
                                  hint="every line needs its own id")
            seen[item["item_id"]] = lineno
            rows.append((item, fields))
    if not rows:
        raise StudioError("task file has no items", where=str(path))
    return rows


# ---------------------------------------------------------------------------------- templates
def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def template_fields(item: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """What {{ item.* }} reads: meta keys, the source line's fields, then the item's own."""
    users = [m["content"] for m in item["prompt"] if m["role"] == "user"]
    return {**item["meta"], **fields, "item_id": item["item_id"], "input": users[-1] if users else "",
            "messages": item["prompt"], "reference": item["reference"], "meta": item["meta"]}


def _render(tpl: Any, ctx: dict[str, Any], where: str, item_id: str) -> str:
    from jinja2 import TemplateError, UndefinedError
    from jinja2.sandbox import SecurityError

    try:
        text = tpl.render(item=ctx).strip()
    except UndefinedError as exc:
        # name the missing key only when it looks like a field name (a key computed from item
        # text would put customer text into the message)
        found = _MISSING.search(exc.message or "")
        name = f" ({found.group(1)!r})" if found else ""
        raise StudioError(f"template reads a field item {item_id!r} does not have{name}",
                          where=where, hint="item fields: " + ", ".join(sorted(ctx))) from None
    except SecurityError:
        raise StudioError("template does something the sandbox forbids", where=where,
                          hint="templates may read {{ item.* }} fields and use filters") from None
    except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        raise StudioError(f"template failed on item {item_id!r} ({exc.__class__.__name__})",
                          where=where) from None
    if not text:
        raise StudioError(f"template rendered an empty message for item {item_id!r}", where=where)
    return text


def apply_template(spec: TaskSpec, rows: list[tuple[dict[str, Any], dict[str, Any]]],
                   where: str) -> list[dict[str, Any]]:
    """Final prompts (system and template applied) and item hashes, in order."""
    env = _environment()
    system = env.from_string(spec.system) if spec.system is not None else None
    user = env.from_string(spec.template) if spec.template is not None else None
    items = []
    for item, fields in rows:
        prompt = item["prompt"]
        if system is not None or user is not None:
            ctx = template_fields(item, fields)
            own = [m for m in prompt if m["role"] == "system"][:1]
            sys_msgs = ([{"role": "system", "content": _render(system, ctx, f"{where}.system",
                                                               item["item_id"])}]
                        if system is not None else own)
            if user is not None:
                prompt = [*sys_msgs, {"role": "user", "content": _render(user, ctx, f"{where}.template",
                                                                         item["item_id"])}]
            else:
                prompt = [*sys_msgs, *(m for m in prompt if m["role"] != "system")]
        items.append({"item_id": item["item_id"], "prompt": prompt, "reference": item["reference"],
                      "meta": item["meta"],
                      "item_hash": sha256_json({"prompt": prompt, "reference": item["reference"]})})
    return items


# ------------------------------------------------------------------------------------ loading
def _generation(base: GenerationSpec, override: GenerationSpec | None) -> GenerationSpec:
    if override is None:
        return base
    return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


def _source(spec: EvalSpec, task: TaskSpec, where: str, cfg_dir: Path | None, registry: Registry,
            tenant: str) -> tuple[dict[str, Any], list[tuple[dict[str, Any], dict[str, Any]]]]:
    if task.path is not None and task.path.startswith("builtin:"):
        module = BUILTINS.get(task.path)
        if module is None:
            raise StudioError(f"unknown built-in suite {task.path!r}", where=f"{where}.path",
                              hint="built-in suites: " + ", ".join(BUILTINS))
        path = module.items_path()
        return ({"ref": f"{task.path}@v{module.GUARD_VERSION}", "name": task.path,
                 "version": module.GUARD_VERSION, "sha256": sha256_file(path), "split": None},
                read_jsonl(path))
    if task.path is not None:
        path = Path(task.path).expanduser()
        if not path.is_absolute():
            path = (cfg_dir or Path.cwd()) / path
        if not path.is_file():
            raise StudioError("task file not found", where=f"{where}.path",
                              hint="paths are relative to the config file's folder")
        sha = sha256_file(path)
        return ({"ref": f"file:{path.name}", "name": f"file:{path.name}", "version": sha[:12],
                 "sha256": sha, "split": None}, read_jsonl(path))
    ref = task.dataset or spec.dataset
    if ref is None:
        raise StudioError("task has no items: give it path or dataset (or set eval.dataset)",
                          where=where)
    row = resolve_dataset(registry, tenant, ref)
    split = task.split or spec.split
    items = load_items(row, split)
    fields = [{} for _ in items]
    return ({"ref": f"{row['name']}@v{row['version']}", "name": row["name"],
             "version": row["version"], "sha256": row["sha256"], "split": split},
            list(zip(items, fields)))


def _relative_to(cfg_dir: Path | None) -> Callable[[str], Path]:
    def resolve(value: str) -> Path:
        path = Path(value).expanduser()
        return Path(os.path.realpath(path if path.is_absolute() else (cfg_dir or Path.cwd()) / path))
    return resolve


def _lm_eval_task(spec: EvalSpec, t: TaskSpec, where: str,
                  resolve_path: Callable[[str], Path]) -> Task:
    plan = lm_eval_task.prepare(t, where, resolve_path)
    slice_keys = list(t.slice_keys) or ["lm_eval_task"]
    eval_spec = spec.model_copy(update={
        "models": None, "dataset": None, "limit": t.limit or spec.limit,
        "slice_key": slice_keys[0], "generation": _generation(spec.generation, t.generation),
        "suite": spec.suite.model_copy(update={"tasks": [t]}) if spec.suite else None})
    name = "lm_eval:" + "+".join(t.lm_eval.tasks) if t.lm_eval else "lm_eval"
    source = {"ref": name, "name": name, "version": None, "sha256": None, "split": None}
    return Task(t.name, t, eval_spec, [], slice_keys, source, [], where, lm_eval=plan)


def load_suite(spec: EvalSpec, cfg_dir: Path | None, registry: Registry, tenant: str,
               resolve_path: Callable[[str], Path] | None = None) -> list[Task]:
    """Every task of `spec.suite`, items loaded and templated, graders checked (files, imports)
    before anything is generated. Task defaults come from the eval section's own keys.
    `resolve_path`: the config's (the job's path policy) for lm_eval folders; default: relative
    to `cfg_dir`."""
    if spec.suite is None:
        raise StudioError("the eval section has no suite", where="eval.suite")
    tasks = []
    for i, t in enumerate(spec.suite.tasks):
        where = f"eval.suite.tasks[{i}]"
        if t.lm_eval is not None:  # lm-eval-harness: items, prompts and metrics come from it
            tasks.append(_lm_eval_task(spec, t, where, resolve_path or _relative_to(cfg_dir)))
            continue
        source, rows = _source(spec, t, where, cfg_dir, registry, tenant)
        limit = t.limit or spec.limit
        rows = rows[:limit] if limit else rows
        builtin = t.path in BUILTINS
        graders = list(t.graders) or [guard.default_grader() if builtin else spec.grader]
        for j, g in enumerate(graders):  # load patterns, schemas and functions now
            build_grader(g, where=f"{where}.graders[{j}]", base_dir=cfg_dir)
        slice_keys = list(t.slice_keys) or (["skill"] if builtin else
                                            [spec.slice_key] if spec.slice_key else [])
        eval_spec = spec.model_copy(update={
            # file tasks keep eval.split here: the proof's dataset section reads it
            "models": None, "dataset": source["ref"], "split": source["split"] or spec.split,
            "limit": limit, "slice_key": slice_keys[0] if slice_keys else None,
            "generation": _generation(spec.generation, t.generation), "grader": graders[0],
            "suite": spec.suite.model_copy(update={"tasks": [t]})})
        tasks.append(Task(t.name, t, eval_spec, graders, slice_keys, source,
                          apply_template(t, rows, where), where))
    return tasks


# ------------------------------------------------------------------------------------ running
def grader_labels(graders: list[GraderSpec]) -> list[str]:
    """Each grader's name, else its type; a repeated label gets '#<index>'."""
    labels = [g.name or g.type for g in graders]
    return [f"{lb}#{j}" if labels.count(lb) > 1 else lb for j, lb in enumerate(labels)]


def _judges(task: Task, registry: Registry, tenant: str) -> tuple[dict[str, Any], Any]:
    """Judge backends per model grader (by grader.model) and the judge identity for the proof."""
    backends: dict[str, Any] = {}
    identity: list[dict[str, Any]] = []
    for j, g in enumerate(task.graders):
        if g.type not in MODEL_TYPES:
            continue
        if not g.model:
            raise StudioError(f"grader type '{g.type}' needs a judge model",
                              where=f"{task.where}.graders[{j}].model",
                              hint="set model: a local store name or run id")
        if g.model not in backends:
            backends[g.model], ident = open_judge(registry, g.model, tenant)
            identity.append(ident)
    judge = None if not identity else identity[0] if len(identity) == 1 else {"judges": identity}
    return backends, judge


def run_task(task: Task, ws: Workspace, registry: Registry, *, tenant: str, model_ref: str,
             ref: ModelRef, backend: Any, cfg_dir: Path | None = None,
             progress: Progress | None = None, suite_name: str | None = None) -> TaskResult:
    """Generate (cached), grade with every grader, write evals/<id>/ and register it."""
    spec, items = task.eval_spec, task.items
    gen = spec.generation
    judges, judge = _judges(task, registry, tenant)
    cache = GenerationCache.for_tenant(ws, tenant) if spec.cache else None
    outputs, cache_stats = cached_generate(
        backend, [it["prompt"] for it in items], model_identity=ref.weights,
        max_new_tokens=gen.max_new_tokens, batch_size=gen.batch_size, temperature=gen.temperature,
        seed=gen.seed, cache=cache, progress=progress, label=f"{task.name} {model_ref}"[:40])
    refs = [it["reference"] for it in items]
    results = [grade_batch(g, outputs, refs, items, backend=judges.get(g.model or ""),
                           batch_size=gen.batch_size, base_dir=cfg_dir,
                           where=f"{task.where}.graders[{j}]")
               for j, g in enumerate(task.graders)]
    labels = grader_labels(task.graders)
    scores = [r.score for r in results[0]]
    graders = []
    for label, g, res in zip(labels, task.graders, results):
        passed = [r.passed for r in res if r.passed is not None]
        graders.append({"name": label, "type": g.type, "score": sum(r.score for r in res) / len(res),
                        "pass_rate": sum(passed) / len(passed) if passed else None})
    eval_id = new_eval_id()
    out_dir = ws.eval_dir(tenant, eval_id)
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    tmp_dir.mkdir(parents=True, mode=0o700)
    # everything is written into <id>.partial and renamed into place, then registered; an
    # error, Ctrl-C or SIGTERM on the way removes what was written (no eval half there)
    written = tmp_dir
    try:
        with (tmp_dir / "outputs.jsonl").open("w", encoding="utf-8") as f:
            for k, (it, out) in enumerate(zip(items, outputs)):
                grades = [{"grader": label, "score": res[k].score, "passed": res[k].passed,
                           **({"detail": res[k].detail} if res[k].detail else {})}
                          for label, res in zip(labels, results)]
                f.write(json.dumps({**it, "output": out, "score": scores[k], "grades": grades},
                                   ensure_ascii=False) + "\n")
        summary = {
            "eval_id": eval_id, "model_ref": model_ref, "model_identity": ref.identity,
            "suite": suite_name, "task": task.name, "guard": task.guard,
            "dataset": task.source["ref"], "dataset_sha256": task.source["sha256"],
            "split": task.source["split"], "n": len(items), "score": sum(scores) / len(scores),
            "grader": task.graders[0].model_dump(), "graders": graders,
            "slice_key": spec.slice_key, "slice_keys": task.slice_keys,
            "settings": gen.model_dump(), "cache": cache_stats.as_dict(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        proof = build_proof(spec, items, ref, task.source, backend=backend, judge=judge, eval_id=eval_id)
        write_proof(tmp_dir, proof)
        summary["proof_sha256"] = proof["proof_sha256"]
        (tmp_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        os.rename(tmp_dir, out_dir)
        written = out_dir
        registry.put_eval(eval_id, tenant, "eval", model_ref, task.source["ref"], out_dir,
                          {"n": summary["n"], "score": summary["score"], "suite": suite_name,
                           "task": task.name, "guard": task.guard})
    except BaseException:
        shutil.rmtree(written, ignore_errors=True)
        raise
    return TaskResult(eval_id, out_dir, model_ref, summary["n"], summary["score"],
                      summary["cache"], summary["proof_sha256"], task=task.name, guard=task.guard,
                      graders=graders)


def run_suite(spec: EvalSpec, ws: Workspace, registry: Registry, *, tenant: str, model_ref: str,
              cfg_dir: Path | None = None, tasks: list[Task] | None = None,
              progress: Progress | None = None, backend: Any = None,
              on_task: Callable[[TaskResult], None] | None = None) -> list[TaskResult]:
    """Every task of the suite for one model, in suite order: one eval directory per task.

    `tasks`: from `load_suite` (loaded here when not given; load once to run several models).
    One backend serves all tasks, so the weights load at most once (and not at all when every
    output is cached). `on_task` is called with each result as it is written."""
    if tasks is None:
        tasks = load_suite(spec, cfg_dir, registry, tenant)
    ref = resolve_model(registry, model_ref, tenant)
    own_backend = backend is None
    if backend is None:
        backend = make_backend(spec, ref.model_dir, ref.adapter_dir)  # loads/starts on first miss
    suite_name = spec.suite.name if spec.suite is not None else None
    results = []
    lm_model = None  # lm-eval's hf model of this model, loaded once for every lm_eval task
    try:
        for task in tasks:
            if task.lm_eval is not None:
                lm_model = lm_model or lm_eval_task.LmEvalModel(ref)
                eval_id, out_dir, summary = lm_eval_task.run_task(
                    task.lm_eval, task.eval_spec, ws, registry, tenant=tenant,
                    model_ref=model_ref, model=lm_model, task_name=task.name, guard=task.guard,
                    progress=progress, suite_name=suite_name)
                res = TaskResult(eval_id, out_dir, model_ref, summary["n"], summary["score"],
                                 summary["cache"], summary["proof_sha256"], task=task.name,
                                 guard=task.guard, graders=summary["graders"])
            else:
                res = run_task(task, ws, registry, tenant=tenant, model_ref=model_ref, ref=ref,
                               backend=backend, cfg_dir=cfg_dir, progress=progress,
                               suite_name=suite_name)
            results.append(res)
            if on_task is not None:
                on_task(res)
    finally:
        if own_backend:
            close_backend(backend)
    return results


def format_result(res: TaskResult) -> str:
    """One line per task for the CLI: task, eval id, score, n, the other graders' scores."""
    others = "".join(f"  {g['name']} {g['score']:.3f}" for g in res.graders[1:])
    return (f"task {res.task}{' (guard)' if res.guard else ''}  eval {res.eval_id}  "
            f"{res.model_ref} scored {res.score:.3f} on {res.n} items{others}")


def print_result(res: TaskResult) -> None:
    out.print(format_result(res), markup=False, highlight=False)
