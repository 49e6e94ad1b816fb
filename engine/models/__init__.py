"""Model store: import (HF dir, GGUF), hashing, loading, and the tiny-model factories for tests and demos.

Submodules import torch/transformers; this package itself imports nothing heavy (the CLI imports
`engine.models.store`, `engine.models.loading` and `engine.models.tiny` lazily).
"""
