"""Private Space: audit log, purge with signed certificates, encryption at rest, retention, canary scans."""
