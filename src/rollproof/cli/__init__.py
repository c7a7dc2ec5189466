"""The `rollproof` command line (see rollproof.cli.app for the exit-code boundary)."""

from rollproof.cli import (  # noqa: F401  (registers the commands)
    demo,
    evidence,
    grants,
    ledger,
    maintenance,
    migrations,
    policy,
    probe,
)
from rollproof.cli.app import cli, main

__all__ = ["cli", "main"]
