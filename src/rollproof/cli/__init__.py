"""The `rollproof` command line (see rollproof.cli.app for the exit-code boundary).

Each command's module is imported when that command runs (`rollproof.cli.app.COMMANDS`), not
here: importing the package costs click and the group, nothing more.
"""

from rollproof.cli.app import cli, main

__all__ = ["cli", "main"]
