"""rollproof: prove a database change can be undone before it may run against production."""

__version__ = "0.1.0"
