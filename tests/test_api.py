"""The public API: every exported name resolves, and the list is kept sorted."""

from __future__ import annotations

import pytest

import rollproof


def test_every_exported_name_resolves() -> None:
    missing = [name for name in rollproof.__all__ if getattr(rollproof, name, None) is None]
    assert missing == []
    assert rollproof.__all__ == sorted(rollproof.__all__)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"^module 'rollproof' has no attribute 'nope'$"):
        rollproof.nope  # type: ignore[attr-defined]  # noqa: B018
