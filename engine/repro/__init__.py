"""Reproducibility (layer 7): `studio reproduce` re-trains a run from its manifest (engine/manifest.py)
and certifies it (reproduce.py)."""
