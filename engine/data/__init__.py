"""Data Refiner (layer 3): raw logs to a versioned dataset of clean conversations.

Entry point: refine.py (`refine()`), with refine_passes.py (the two streaming passes),
record_workers.py (per-record stages in worker processes), ingest/ (one reader per format),
stages/ (one module per stage), card.py + card_html.py (the data card), vault.py (encrypted PII
mapping), minhash.py, distributed.py (datatrove steps), refine_datatrove.py (`refine.executor:
datatrove`: the per-record stages as datatrove tasks over shards). May import the foundation,
privacy, models, generation and grading; never train, eval, serve or the CLI.
"""
