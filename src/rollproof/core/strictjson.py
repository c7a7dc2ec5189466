"""Strict JSON parsing for untrusted evidence: one meaning per document, or an error.

`json.loads` alone accepts documents that mean different things to different readers. Each rule
here closes one such gap:

* bytes must be UTF-8 without a byte-order mark (a BOM or a Latin-1 file decodes differently
  elsewhere);
* a duplicate object key is an error (Python keeps the last value, other parsers the first: a
  report could show one verdict to a reviewer's tool and another to the validator);
* NaN, Infinity and -Infinity are errors (not JSON; they compare unequal to themselves);
* a lone surrogate escape (`"\\ud800"`) is an error (not a Unicode string; canonical JSON and
  most other parsers refuse it);
* anything after the document other than whitespace is an error (two documents in one file);
* nesting deeper than `MAX_NESTING` is an error (a recursion bomb must not crash the validator).
"""

from __future__ import annotations

import json
from typing import Any

MAX_NESTING = 64


class StrictJsonError(ValueError):
    """The bytes are not one strict JSON document; the message says why."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJsonError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise StrictJsonError(f"{name} is not JSON")


def _check(value: Any, depth: int) -> None:
    if depth > MAX_NESTING:
        raise StrictJsonError(f"nested deeper than {MAX_NESTING} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check(item, depth + 1)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise StrictJsonError("contains a lone surrogate escape") from e


def loads_strict(data: bytes) -> Any:
    """Parse `data` as one strict JSON document (see the module docstring)."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise StrictJsonError("starts with a byte-order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StrictJsonError(f"not UTF-8 (byte {e.start})") from e
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except StrictJsonError:
        raise
    except json.JSONDecodeError as e:
        raise StrictJsonError(f"{e.msg} at line {e.lineno} column {e.colno}") from e
    except (RecursionError, ValueError) as e:  # deep nesting; integers beyond the digit limit
        raise StrictJsonError(f"cannot be parsed: {type(e).__name__}") from e
    _check(value, 0)
    return value
