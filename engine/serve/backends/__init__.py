"""Serving backends that live in the gateway's process (hf.py: transformers with dynamic batching).

The vLLM backend is a supervised child process: engine/generation/vllm_server.py.
"""
