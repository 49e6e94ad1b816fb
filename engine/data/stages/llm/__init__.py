"""LLM-assisted refine stages on a local model: judge, rewrite, Q/A extraction, preference pairs.

Each stage is a streaming function over Conversation records that takes an open backend
(`backend.open_backend`) and the `refine.llm` spec; see docs/refine-llm.md.
"""

from engine.data.stages.llm.backend import open_backend
from engine.data.stages.llm.extract_qa import extract_qa, parse_pairs
from engine.data.stages.llm.judge import judge
from engine.data.stages.llm.preferences import preference_row, preferences
from engine.data.stages.llm.rewrite import rewrite

__all__ = ["extract_qa", "judge", "open_backend", "parse_pairs", "preference_row", "preferences",
           "rewrite"]
