"""Grading: scoring model outputs, offline — graders and the model judge.

graders.py (every GraderSpec type: exact/regex/JSON/metrics/python/model graders), result.py
(GradeResult), judge.py (rubric and pairwise judges, the OpenAI model graders), rubric.py (the
1-5 judge prompt shared with the refine's LLM judge). Used by eval, GRPO rewards and the refine.
"""
