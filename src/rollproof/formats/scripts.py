"""A self-bracketing transaction, as the loaders note it (the rule itself is core.brackets,
which change.toml's `strip_transaction` and the validator share)."""

from __future__ import annotations

from rollproof.core.brackets import strip_bracket

__all__ = ["bracket_note", "strip_bracket"]


def bracket_note(path: str) -> str:
    return (
        f"{path}: its BEGIN ... COMMIT is left out; rollproof runs the script in its own "
        "transaction"
    )
