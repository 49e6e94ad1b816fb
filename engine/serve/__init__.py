"""Serving (layer 6): the OpenAI-compatible gateway with per-tenant keys and usage accounting.

gateway.py (FastAPI app), api.py (request checks), server.py (backend choice, uvicorn), keys.py,
usage.py, promote.py (served_models behind the gate), metrics.py (Prometheus), bench.py,
backends/ (in-process transformers). The vLLM server and the backend interface are
engine/generation (vllm_server.py, serving.py).
"""
