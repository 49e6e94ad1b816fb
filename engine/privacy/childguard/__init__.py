"""A sitecustomize that gives every child Python process the offline egress guard (see sitecustomize.py)."""
