"""Training data: every accepted file format converted, in one place, to the rows TRL expects.

Accepted line formats (`train.data_format`, or detected per line with `auto`):
  openai_chat        {"messages": [{"role", "content"}, ...]}
  openai_preference  {"input": {"messages": [...]}, "preferred_output": [msg], "non_preferred_output": [msg]}
  sharegpt           {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}
  alpaca             {"instruction", "input"?, "output", "system"?}
  prompt_completion  {"prompt": str|[msgs], "completion": str|[msgs]}
  trl_preference     {"prompt"?, "chosen", "rejected"}  (strings or message lists)
  trl_unpaired       {"prompt", "completion", "label": bool}  (KTO; thumbs up/down)
  trl_prompt         {"prompt", ...extra columns}  (GRPO; extra columns reach the reward functions)

Every bad line is reported with file, line number and reason, and the run refuses to start:
nothing is silently dropped. Rows come back in one of four shapes (`want`):
  sft         {"messages": [...]}
  preference  {"prompt": [...], "chosen": [assistant msg], "rejected": [assistant msg]}
  unpaired    {"prompt": [...], "completion": [assistant msg], "label": bool}
  prompt      {"prompt": [...], "answer": str (when the record has a reference reply), **extra}
A UTF-8 byte-order mark is accepted; any other undecodable line is reported like a bad line.
A weighted mixture (`train.datasets`) loads each source like this and interleaves their rows with
`datasets.interleave_datasets`, seeded by the config's `seed` (`mix`).
From a refined dataset version (`train.dataset`) the sft and prompt shapes come from its
train.jsonl and val.jsonl, the preference and unpaired shapes from its preferences.jsonl (the pairs
of the refine's preference stage, train split only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.errors import DataError, StudioError
from engine.hashing import file_manifest, sha256_file, sha256_json
from engine.registry import Registry, resolve_dataset

Want = Literal["sft", "preference", "unpaired", "prompt"]
Msgs = list[dict[str, str]]
MAX_REPORTED = 20
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "bot": "assistant", "model": "assistant"}
_ROLES = {"system", "user", "assistant"}


class LineError(ValueError):
    """A line that cannot be used; the message is the reason (never the line's content)."""


@dataclass
class TrainingData:
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)  # ref, sha256, files: {name: sha256}


# ------------------------------------------------------------------------------------ messages
def _msgs(value: Any, what: str) -> Msgs:
    if isinstance(value, str):
        raise LineError(f"{what} must be a list of messages here")
    if not isinstance(value, list) or not value:
        raise LineError(f"{what} must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise LineError(f"{what}[{i}] needs a role of system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise LineError(f"{what}[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _as_prompt(value: Any, what: str = "prompt") -> Msgs:
    if isinstance(value, str):
        if not value.strip():
            raise LineError(f"{what} is empty")
        return [{"role": "user", "content": value}]
    msgs = _msgs(value, what)
    if msgs[-1]["role"] == "assistant":
        raise LineError(f"{what} must not end with an assistant message")
    return msgs


def _as_reply(value: Any, what: str) -> Msgs:
    if isinstance(value, str):
        if not value.strip():
            raise LineError(f"{what} is empty")
        return [{"role": "assistant", "content": value}]
    msgs = _msgs(value, what)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise LineError(f"{what} must be one assistant message")
    return msgs


def _check_conversation(msgs: Msgs) -> Msgs:
    if not any(m["role"] == "assistant" for m in msgs):
        raise LineError("conversation has no assistant message")
    if msgs[-1]["role"] != "assistant":
        raise LineError("conversation must end with an assistant message")
    return msgs


# ------------------------------------------------------------------------------------- formats
def detect(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "openai_chat"
    if "preferred_output" in row or "non_preferred_output" in row:
        return "openai_preference"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row:
        return "alpaca"
    if "chosen" in row or "rejected" in row:
        return "trl_preference"
    if "label" in row and "completion" in row:
        return "trl_unpaired"
    if "completion" in row:
        return "prompt_completion"
    if "prompt" in row:
        return "trl_prompt"
    raise LineError("unrecognised record: no messages, conversations, instruction, prompt, "
                    "chosen/rejected or preferred_output field")


def _from_sharegpt(row: dict[str, Any]) -> Msgs:
    conv = row.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise LineError("conversations must be a non-empty list")
    msgs = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") not in _SHAREGPT_ROLES:
            raise LineError(f"conversations[{i}].from must be one of {sorted(_SHAREGPT_ROLES)}")
        if not isinstance(turn.get("value"), str):
            raise LineError(f"conversations[{i}].value must be a string")
        msgs.append({"role": _SHAREGPT_ROLES[turn["from"]], "content": turn["value"]})
    return msgs


def _from_alpaca(row: dict[str, Any]) -> Msgs:
    instruction, output = row.get("instruction"), row.get("output")
    if not isinstance(instruction, str) or not instruction.strip():
        raise LineError("instruction must be a non-empty string")
    if not isinstance(output, str) or not output.strip():
        raise LineError("output must be a non-empty string")
    extra, system = row.get("input", ""), row.get("system", "")
    if not isinstance(extra, str | None):
        raise LineError("input must be a string")
    if not isinstance(system, str | None):
        raise LineError("system must be a string")
    extra = extra or ""
    msgs: Msgs = []
    if system and system.strip():
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction})
    msgs.append({"role": "assistant", "content": output})
    return msgs


def convert(row: Any, fmt: str, want: Want) -> dict[str, Any]:
    """One parsed JSON line in format `fmt` ('auto' detects) -> one row of shape `want`."""
    if not isinstance(row, dict):
        raise LineError("line is not a JSON object")
    fmt = detect(row) if fmt == "auto" else fmt
    if fmt in ("openai_chat", "sharegpt", "alpaca"):
        msgs = _msgs(row.get("messages"), "messages") if fmt == "openai_chat" else (
            _from_sharegpt(row) if fmt == "sharegpt" else _from_alpaca(row))
        return _conversation_to(_check_conversation(msgs), want, row)
    if fmt == "prompt_completion":
        if "prompt" not in row or "completion" not in row:
            raise LineError("prompt_completion needs prompt and completion")
        prompt, reply = _as_prompt(row["prompt"]), _as_reply(row["completion"], "completion")
        if want == "sft":
            return {"messages": prompt + reply}
        if want == "unpaired" and "label" in row:
            return _unpaired(prompt, reply, row["label"])
        if want == "prompt":
            return _prompt_row(prompt, row, drop=("prompt", "completion"), answer=reply[0]["content"])
        raise LineError(f"prompt/completion records cannot be used for {want} training")
    if fmt in ("openai_preference", "trl_preference"):
        if fmt == "openai_preference":
            inp = row.get("input")
            if not isinstance(inp, dict):
                raise LineError("input must be an object with messages")
            prompt = _as_prompt(inp.get("messages"), "input.messages")
            chosen = _as_reply(row.get("preferred_output"), "preferred_output")
            rejected = _as_reply(row.get("non_preferred_output"), "non_preferred_output")
        else:
            chosen_raw, rejected_raw = row.get("chosen"), row.get("rejected")
            if chosen_raw is None or rejected_raw is None:
                raise LineError("a preference record needs chosen and rejected")
            if "prompt" in row:
                prompt = _as_prompt(row["prompt"])
                chosen, rejected = _as_reply(chosen_raw, "chosen"), _as_reply(rejected_raw, "rejected")
            else:  # implicit prompt: chosen/rejected are full conversations sharing a prefix
                c, r = _msgs(chosen_raw, "chosen"), _msgs(rejected_raw, "rejected")
                if c[:-1] != r[:-1] or c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
                    raise LineError("implicit-prompt chosen/rejected must share all but a final assistant message")
                prompt, chosen, rejected = c[:-1], [c[-1]], [r[-1]]
                if not prompt or prompt[-1]["role"] == "assistant":
                    raise LineError("implicit-prompt chosen/rejected need a prompt (ending with a user "
                                    "message) before the final assistant message")
        if want == "preference":
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if want == "unpaired":  # a pair gives one thumbs-up and one thumbs-down example
            return {"pair": [_unpaired(prompt, chosen, True), _unpaired(prompt, rejected, False)]}
        if want == "sft":
            return {"messages": prompt + chosen}
        return _prompt_row(prompt, row, drop=("prompt", "chosen", "rejected", "input",
                                               "preferred_output", "non_preferred_output"),
                           answer=chosen[0]["content"])
    if fmt == "trl_unpaired":
        prompt = _as_prompt(row.get("prompt"))
        reply = _as_reply(row.get("completion"), "completion")
        if want == "unpaired":
            return _unpaired(prompt, reply, row.get("label"))
        if want == "prompt":
            return _prompt_row(prompt, row, drop=("prompt", "completion", "label"))
        raise LineError(f"unpaired (thumbs up/down) records cannot be used for {want} training")
    if fmt == "trl_prompt":
        if want != "prompt":
            raise LineError(f"prompt-only records cannot be used for {want} training")
        return _prompt_row(_as_prompt(row.get("prompt")), row, drop=("prompt",))
    raise LineError(f"unknown data format {fmt!r}")


def _conversation_to(msgs: Msgs, want: Want, row: dict[str, Any]) -> dict[str, Any]:
    if want == "sft":
        return {"messages": msgs}
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    if want in ("prompt", "unpaired") and not msgs[:last]:
        raise LineError(f"conversation has no prompt before its final assistant message ({want} training)")
    if want == "prompt":
        extra = {k: v for k, v in row.items() if k not in ("messages", "conversations", "instruction",
                                                            "input", "output", "system")}
        return {"prompt": msgs[:last], "answer": msgs[last]["content"], **extra}
    if want == "unpaired" and "label" in row:
        return _unpaired(msgs[:last], [msgs[last]], row["label"])
    raise LineError(f"plain conversations cannot be used for {want} training "
                    "(it needs chosen/rejected pairs or thumbs-up/down labels)")


def _unpaired(prompt: Msgs, reply: Msgs, label: Any) -> dict[str, Any]:
    if isinstance(label, str) and label.lower() in ("up", "down", "thumbs_up", "thumbs_down"):
        label = label.lower() in ("up", "thumbs_up")
    if not isinstance(label, bool):
        raise LineError("label must be true/false (or 'up'/'down')")
    return {"prompt": prompt, "completion": reply, "label": label}


def _prompt_row(prompt: Msgs, row: dict[str, Any], drop: tuple[str, ...],
                answer: str | None = None) -> dict[str, Any]:
    """GRPO row: the prompt, the reference `answer` where the record has one, the other columns."""
    out: dict[str, Any] = {"prompt": prompt} if answer is None else {"prompt": prompt, "answer": answer}
    return {**out, **{k: v for k, v in row.items() if k not in drop}}


# ---------------------------------------------------------------------------------------- files
def load_examples(path: str | Path, want: Want, fmt: str = "auto") -> list[dict[str, Any]]:
    """Every line of a JSONL file as a `want` row; DataError listing every bad line otherwise."""
    p = Path(path)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        f = p.open("rb")
    except FileNotFoundError:
        raise DataError("training data file not found", where=str(p)) from None
    except OSError as exc:
        raise DataError(f"cannot open training data ({exc.__class__.__name__})", where=str(p)) from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:  # a byte-order mark (Windows editors, spreadsheet exports) is not an error
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                errors.append(f"{p.name}:{lineno}: not UTF-8 text (save the file as UTF-8)")
                continue
            if not line.strip():
                continue
            try:
                out = convert(json.loads(line), fmt, want)
            except json.JSONDecodeError as exc:
                errors.append(f"{p.name}:{lineno}: not valid JSON ({exc.msg})")
                continue
            except LineError as exc:
                errors.append(f"{p.name}:{lineno}: {exc}")
                continue
            rows.extend(out["pair"] if "pair" in out else [out])
    if errors:
        shown = errors[:MAX_REPORTED]
        more = f"\n… and {len(errors) - len(shown)} more bad lines" if len(errors) > len(shown) else ""
        raise DataError(f"{len(errors)} bad line(s); training refuses to start:\n" + "\n".join(shown) + more,
                        where=str(p), hint="fix or remove these lines; see docs/training-data.md")
    if not rows:
        raise DataError("training data has no records", where=str(p))
    return rows


def load_training_data(spec: Any, registry: Registry, tenant: str, want: Want,
                       resolve_path: Any = Path, *, seed: int = 0) -> TrainingData:
    """Rows for a recipe from `train.data` (a file), `train.dataset` (a refined version: its
    conversations, or for pairs and thumbs up/down its preference stage's pairs) or a
    `train.datasets` mixture of those (interleaved with `seed`)."""
    if getattr(spec, "datasets", None):
        parts = [_load_source(src.dataset, src.data, spec.data_format, registry, tenant, want,
                              resolve_path) for src in spec.datasets]
        data = mix(parts, [src.weight for src in spec.datasets], seed, spec.mix_stopping_strategy)
    elif spec.data or spec.dataset:
        data = _load_source(spec.dataset, spec.data, spec.data_format, registry, tenant, want,
                            resolve_path)
    else:
        raise StudioError("no training data: set train.dataset, train.data or train.datasets")
    require_val(spec, data.val)
    return data


def require_val(spec: Any, val: list[Any]) -> None:
    """`train.eval_steps` evaluates on the validation split: refuse a run that has none."""
    if getattr(spec, "eval_steps", None) and not val:
        raise DataError("train.eval_steps needs a validation split, and this training data has none",
                        where="train.eval_steps",
                        hint="train on a refined dataset version (its val.jsonl; preference pairs "
                        "and files have no val split), or remove eval_steps")


def _load_source(dataset: str | None, data: str | None, fmt: str, registry: Registry, tenant: str,
                 want: Want, resolve_path: Any) -> TrainingData:
    """One source: a JSONL file (no val split) or a refined dataset version."""
    if data:
        path = Path(resolve_path(data))
        rows = load_examples(path, want, fmt)
        return TrainingData(rows, [], {"ref": path.name, "sha256": sha256_file(path),
                                       "files": {path.name: sha256_file(path)}})
    row = resolve_dataset(registry, tenant, dataset)
    root = Path(row["path"])
    if want in ("preference", "unpaired"):  # a refined version's pairs: its preference stage's file
        train, val = _preference_pairs(root, want, f"{row['name']}@v{row['version']}"), []
    else:
        train = load_examples(root / "train.jsonl", want, "auto")
        val_path = root / "val.jsonl"
        val = load_examples(val_path, want, "auto") if val_path.is_file() and val_path.stat().st_size else []
    return TrainingData(train, val, {"ref": f"{row['name']}@v{row['version']}", "sha256": row["sha256"],
                                     "files": file_manifest(root), "dataset": row})


def mix(parts: list[TrainingData], weights: list[float], seed: int,
        stopping_strategy: str = "first_exhausted") -> TrainingData:
    """One training set from weighted sources: `datasets.interleave_datasets` picks, seeded, which
    source each next row comes from (probability = weight / sum of weights) until the first source
    runs out (`first_exhausted`) or every one has been used up at least once (`all_exhausted`,
    which repeats the smaller ones). What it interleaves is (source, row) indices, so sources
    with different extra columns mix too. The validation splits are concatenated. The info
    records every source's version, hashes, weight and row count."""
    from datasets import Dataset, interleave_datasets  # lazy: heavy, only for mixtures

    probabilities = [w / sum(weights) for w in weights]
    index = [Dataset.from_dict({"source": [i] * len(p.train), "row": list(range(len(p.train)))})
             for i, p in enumerate(parts)]
    mixed = interleave_datasets(index, probabilities=probabilities, seed=seed,
                                stopping_strategy=stopping_strategy)
    picks = list(zip(mixed["source"], mixed["row"], strict=True))
    train = [parts[i].train[r] for i, r in picks]
    val = [row for p in parts for row in p.val]
    sources = [{"ref": p.info["ref"], "sha256": p.info["sha256"], "weight": w,
                "probability": round(q, 6), "rows": len(p.train),
                "mixed_rows": sum(1 for i, _ in picks if i == k), "files": p.info["files"]}
               for k, (p, w, q) in enumerate(zip(parts, weights, probabilities, strict=True))]
    mixture = {"seed": seed, "stopping_strategy": stopping_strategy, "rows": len(train),
               "sources": [{k: s[k] for k in ("ref", "sha256", "weight")} for s in sources]}
    info = {"ref": "+".join(s["ref"] for s in sources), "sha256": sha256_json(mixture),
            "files": {f"{s['ref']}/{name}": digest for s in sources for name, digest in s["files"].items()},
            "sources": sources, "mixture": {k: v for k, v in mixture.items() if k != "sources"}}
    return TrainingData(train, val, info)


def _preference_pairs(root: Path, want: Want, ref: str) -> list[dict[str, Any]]:
    """The rows of a refined version's preferences.jsonl (its train split's pairs, written by the
    refine's preference stage); a version without pairs is refused with what would give it some."""
    path = root / "preferences.jsonl"
    if not path.is_file():
        raise DataError(f"dataset {ref} has no preference pairs (preferences.jsonl)",
                        where="train.method", hint="refine it with refine.llm.preferences.enabled: "
                        "true, or train on a file of pairs with train.data")
    if not path.stat().st_size:
        raise DataError(f"the refine's preference stage wrote no pairs for dataset {ref}",
                        where="train.method", hint="every answer of the preference model was empty "
                        "or the golden one (card.json counts them); use a model that answers "
                        "differently (refine.llm.preferences.model), or method sft")
    return load_examples(path, want, "openai_preference")
