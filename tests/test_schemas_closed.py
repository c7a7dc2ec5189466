"""Every JSON Schema rollproof ships is closed: no open object, no unanchored pattern, bounds.

* an object schema (`"type": "object"`) says `additionalProperties: false`, or is a bounded map
  (`maxProperties`, a `propertyNames` with an anchored pattern or an enum, and a schema for the
  values);
* every `pattern` is anchored `^...$` (the validator reads its `$` as the end of the string);
* every array has `maxItems` (or `prefixItems` and `items: false`), every string outside an
  enum or const has `maxLength` or a pattern of bounded length.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from rollproof.verify.validate import _compiled

SCHEMAS = sorted(
    p.name
    for p in resources.files("rollproof").joinpath("schemas").iterdir()
    if p.name.endswith(".schema.json")
)


def _nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _nodes(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, f"{path}/{i}")


def _anchored(pattern: str) -> bool:
    return pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith("\\$")


def problems(schema: dict[str, Any]) -> list[str]:
    out = []
    for path, node in _nodes(schema):
        if (
            "pattern" in node
            and isinstance(node["pattern"], str)
            and not _anchored(node["pattern"])
        ):
            out.append(f"{path}: pattern {node['pattern']!r} is not anchored ^...$")
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            names = node.get("propertyNames", {})
            bounded_map = (
                "maxProperties" in node
                and isinstance(node.get("additionalProperties"), dict)
                and ("enum" in names or _anchored(names.get("pattern", "")))
            )
            if not bounded_map:
                out.append(f"{path}: open object")
        if node.get("type") == "array" and "maxItems" not in node:
            out.append(f"{path}: array without maxItems")
        pattern = str(node.get("pattern", ""))
        fixed_length = "{" in pattern and "*" not in pattern and "+" not in pattern
        if (
            node.get("type") == "string"
            and "maxLength" not in node
            and "format" not in node
            and not fixed_length
        ):
            out.append(f"{path}: string without maxLength")
    return out


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_is_closed(name: str) -> None:
    text = resources.files("rollproof").joinpath(f"schemas/{name}").read_text("utf-8")
    assert problems(json.loads(text)) == []


def test_the_check_finds_what_it_looks_for() -> None:
    """Positive twin of the walk: open objects and loose patterns are reported."""
    bad = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "pattern": "^[0-9]+"},
            "b": {"type": "object"},
            "c": {"type": "array", "items": {"type": "string", "maxLength": 3}},
            "d": {"type": "string"},
        },
    }
    found = problems(bad)
    assert len(found) == 6, found
    assert problems({"type": "string", "maxLength": 3, "pattern": "^a$"}) == []


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [("^[0-9]+$", "12", True), ("^[0-9]+$", "12\n", False), ("^a$", "a\nb", False)],
)
def test_dollar_is_the_end_of_the_string(pattern: str, value: str, matches: bool) -> None:
    assert (_compiled(pattern).search(value) is not None) is matches
