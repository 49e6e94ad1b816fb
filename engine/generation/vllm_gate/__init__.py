"""An ASGI middleware the vLLM child loads from this folder: its per-start key on every path but /health (studio_vllm_gate.py)."""
