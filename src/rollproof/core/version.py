"""The running rollproof version, recorded in every report and printed by `--version`."""

__version__ = "0.1.0"
