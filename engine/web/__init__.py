"""The Studio dashboard: read-only FastAPI pages (server-rendered Jinja, package-shipped CSS, inline SVG)."""
