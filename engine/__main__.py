"""`python -m engine` runs the `studio` CLI."""

from engine.cli import main

main()
