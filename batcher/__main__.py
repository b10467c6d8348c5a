"""Entry point for ``python -m batcher``."""

from batcher.cli import main

main()
