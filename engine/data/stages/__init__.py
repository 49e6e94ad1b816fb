"""The refine stages, one module per stage (normalize, turns, quality, language, pii, dedup, split,
decontam) and llm/ (judge, rewrite, Q/A extraction, preference pairs on a local model)."""
