"""Generation: producing text from a stored model, in process (transformers) or through vLLM.

protocol.py (the GenerationBackend interface), factory.py (make_backend), transformers_backend.py,
vllm_generation.py (batched eval/judge generation through a vLLM server), vllm_server.py (the
supervised vLLM OpenAI server, also the gateway's vLLM backend), vllm_env.py (vLLM's own
interpreter), serving.py (the interface of an OpenAI-shaped serving backend).
"""
