"""The `serve` section (kind: serve): backend, base model, address, batching and vLLM options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from engine.config.base import Strict

# vLLM server options the engine sets itself, or that would open the server to other callers,
# change what it serves or make it log prompts: refused in `vllm.extra_args`. argparse accepts
# any unambiguous prefix of an option and vLLM reads `_` as `-`, so a given option is refused when
# it is a prefix of one of these.
VLLM_RESERVED_ARGS = (
    "--host", "--port", "--uds", "--api-key", "--allowed-origins", "--allowed-methods",
    "--allowed-headers", "--allow-credentials", "--middleware", "--root-path", "--ssl-keyfile",
    "--ssl-certfile", "--ssl-ca-certs", "--ssl-cert-reqs", "--ssl-ciphers", "--enable-ssl-refresh",
    "--grpc", "--grpc-port", "--config", "--model", "--served-model-name", "--lora-modules",
    "--enable-lora", "--enable-log-requests", "--enable-log-outputs", "--trust-remote-code",
    "--disable-uvicorn-access-log", "--headless",
)


def reserved_vllm_args(args: list[str]) -> list[str]:
    """The options in `args` that `VLLM_RESERVED_ARGS` refuses (as given)."""
    bad = []
    for arg in args:
        if not arg.startswith("--") or arg == "--":
            continue
        option = "--" + arg[2:].split("=", 1)[0].split(".", 1)[0].replace("_", "-").lower()
        if option.startswith("--no-"):
            option = "--" + option[5:]
        if len(option) > 2 and any(r.startswith(option) for r in VLLM_RESERVED_ARGS):
            bad.append(arg.split("=", 1)[0])
    return bad


class BatchingSpec(Strict):
    """How the transformers backend groups requests (vLLM batches continuously on its own)."""

    max_batch_size: int = Field(default=8, ge=1, le=256, description="requests per generate call")
    batch_wait_ms: float = Field(default=10.0, ge=0.0, le=1000.0, description="how long the first "
                                 "request of a batch waits for others to join it")
    max_queue: int = Field(default=256, ge=1, description="queued requests above which new ones "
                           "get HTTP 429")


class VllmSpec(Strict):
    """Options the vLLM backend (engine/generation/vllm_server.py) reads."""

    python: str | None = Field(default=None, description="Python interpreter of the environment "
                               "with vLLM installed (none: $STUDIO_VLLM_PYTHON, else .venv-vllm next "
                               "to the project)")
    max_model_len: int | None = Field(default=None, ge=16, description="context length "
                                      "(--max-model-len); none: the model's")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(default="auto")
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    max_loras: int = Field(default=4, ge=1, description="different adapters one batch may mix (--max-loras)")
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = Field(
        default=16, description="--max-lora-rank (one of the ranks vLLM accepts)")
    startup_timeout_s: float = Field(default=600.0, gt=0.0, description="how long to wait for the "
                                     "vLLM server to answer /health")
    extra_args: list[str] = Field(default_factory=list, description="more vLLM server arguments, "
                                  "passed as given; options the engine sets or that open the server "
                                  "(--host, --port, --api-key, --allowed-origins, ...) are refused")

    @field_validator("extra_args")
    @classmethod
    def _no_reserved_args(cls, value: list[str]) -> list[str]:
        bad = reserved_vllm_args(value)
        if bad:
            raise ValueError(f"{', '.join(bad)} may not be set in extra_args: the engine sets the "
                             "vLLM server's address, API key, origins, served models and logging "
                             "itself")
        return value


class ServeSpec(Strict):
    backend: Literal["transformers", "vllm"] = Field(default="transformers", description="in-process "
                                                     "transformers (CPU or one GPU) or a vLLM server")
    base_model: str = Field(description="base model name in the model store")
    host: str = Field(default="127.0.0.1", description="address to listen on (loopback by default)")
    port: int = Field(default=8000, ge=0, le=65535, description="0: a free port")
    expose_base: bool = Field(default=True, description="every tenant may also call the base model "
                              "under its store name")
    reload_interval_s: float = Field(default=5.0, ge=0.0, description="seconds between re-reads "
                                     "of the promoted models (served_models); 0: only at start "
                                     "and on POST /admin/reload")
    default_max_tokens: int = Field(default=256, ge=1, description="max_tokens when a request "
                                    "gives none")
    max_tokens_limit: int = Field(default=2048, ge=1, description="largest max_tokens a request "
                                  "may ask for (HTTP 400 above)")
    max_concurrent_per_tenant: int = Field(default=64, ge=1, description="requests of one tenant "
                                           "in flight at once; more get HTTP 429")
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="largest request "
                                   "body accepted (bytes); larger ones get HTTP 413 before they "
                                   "are read")
    metrics_public: bool = Field(default=False, description="serve /metrics without an admin key "
                                 "(it names tenants and models)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="transformers backend weights (auto: bfloat16 on a GPU, "
        "float32 on CPU)")
    threads: int | None = Field(default=None, ge=1, description="transformers backend CPU threads "
                                "(none: torch's default)")
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    vllm: VllmSpec = Field(default_factory=VllmSpec)
