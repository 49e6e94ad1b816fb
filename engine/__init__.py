"""Expert Studio engine: local, offline fine-tuning from raw logs to a proven, served expert model."""

__version__ = "0.1.0"
