"""Private Space (layer 1): audit log, purge with signed certificates, encryption at rest, retention,
tenant isolation, canary scans, and jobs.py (the privacy hooks every CLI verb runs through)."""
