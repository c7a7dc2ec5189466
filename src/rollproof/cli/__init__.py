"""The `rollproof` command line (see rollproof.cli.app for the exit-code boundary)."""

from rollproof.cli import demo, evidence, grants, ledger, policy  # noqa: F401  (registers the commands)
from rollproof.cli.app import cli, main

__all__ = ["cli", "main"]
