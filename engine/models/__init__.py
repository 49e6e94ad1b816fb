"""Models (layer 1): the model store, loading, model references, exports, tiny test models.

store.py (import an HF dir or GGUF, sha256 manifest), loading.py (local-only, safetensors-only
loading; what kind of model a directory holds), resolve.py (a store name or run id to weights and
hashes), export.py (a run's adapter or merged model), tiny.py (random tiny models for tests).
Submodules import torch/transformers inside their functions; importing them is cheap.
"""
