"""Eval & Diff (layer 5): base vs tuned on the same items, paired statistics, gates, reports.

run.py (one eval), suite.py (eval suites: one eval per task), items.py, cache.py (generation
cache), proof.py, diff.py + significance.py (paired tests, gates), report.py + worddiff.py (the
HTML report), guard/ (the built-in regression suite). Generation and grading are
engine/generation and engine/grading; model references engine/models/resolve.py.
"""
