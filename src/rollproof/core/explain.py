"""Words for a table whose rows did not come back: shared by every engine's explainer.

An engine counts, by primary key, the rows that went missing, appeared, or changed (per
column, and how many values were set before and are NULL now); this module turns the counts
into the detail recorded in the report and the sentence a person reads, so that SQLite and
PostgreSQL explain the same loss in the same words.

It also holds what the report shows beyond counts (docs/report.md, "Differences"): schema
`attributes` (object, attribute, old -> new) and example rows (`RowExample`: key, old -> new),
and the rule deciding which of them may be shown (`ShowPolicy`: at most `max_examples` rows per
table; nothing from a forbidden object; no value of a secret column). Values are SQL literals
cut to VALUE_CHARS. `attribute_text` and `example_text` word them, for report.md (which the
validator re-renders) and the console alike.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def count(value: int) -> str:
    return f"{value:,}"


def keyed_row_summary(
    *,
    changed: int,
    missing: int,
    added: int,
    per_column: Mapping[str, int],
    now_null: Mapping[str, int],
) -> tuple[list[str], dict[str, Any]]:
    """Summary parts and report detail for a table compared row by row through its key."""
    detail: dict[str, Any] = {
        "rows_changed": changed,
        "rows_missing": missing,
        "rows_added": added,
        "columns_changed": dict(per_column),
        "values_now_null": dict(now_null),
    }
    parts = [f"{count(changed)} rows differ"] if changed else []
    for column, n in per_column.items():
        lost = now_null.get(column, 0)
        if lost == n:
            parts.append(f"{column}: {count(n)} values lost (set before, NULL now)")
        elif lost:
            parts.append(f"{column}: {count(n)} values differ, {count(lost)} of them now NULL")
        else:
            parts.append(f"{column}: {count(n)} values differ")
    if missing:
        parts.append(f"{count(missing)} rows missing")
    if added:
        parts.append(f"{count(added)} rows added")
    return parts, detail


# --- examples and attributes: what a person can act on -------------------------------------

DEFAULT_MAX_EXAMPLES = 10
"""Rows shown per table when a rollback path left rows different (`--max-examples`)."""
MAX_EXAMPLES = 1000
"""The most rows a report may show per table (the report schema's bound)."""
VALUE_CHARS = 120
"""A shown value (an SQL literal, a schema fragment) is cut to this many characters."""
REDACTED = "(redacted)"

_CONTROL = frozenset([*(chr(c) for c in range(0x20)), "\x7f", "\u0085", "\u2028", "\u2029"])
Shown = str | None
"""A value as the report shows it: an SQL literal (or schema text), None when there is none."""


def _cut(text: str, limit: int, unit: str, total: int) -> str:
    return text if total <= limit else f"{text}… ({total:,} {unit})"


def sql_literal(value: object, limit: int = VALUE_CHARS, *, length: int | None = None) -> str:
    """`value` (a SQL value as a driver returns it) written as an SQL literal, at most about
    `limit` characters: NULL, 42, 1.5, 'it''s', X'00ff'. Control characters in text are written
    as `char(n)` so the literal stays one line; a longer value is cut and says its length.
    `length` is the whole value's length when `value` is only its start (text or bytes): an
    engine need not fetch more of a large value than is shown."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return _cut(str(value)[:limit], limit, "digits", len(str(value)))
    if isinstance(value, float):
        if value != value:
            return "NULL"
        if value in (float("inf"), float("-inf")):
            return "9e999" if value > 0 else "-9e999"
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        size = len(raw) if length is None else max(length, len(raw))
        shown = raw[: limit // 2]  # two hex digits a byte
        return _cut("X'" + shown.hex().upper() + "'", limit // 2, "bytes", size)
    text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    pieces: list[str] = []
    run = ""
    for ch in text[:limit]:
        if ch in _CONTROL:
            if run:
                pieces.append("'" + run.replace("'", "''") + "'")
                run = ""
            pieces.append(f"char({ord(ch)})")
        else:
            run += ch
    if run or not pieces:
        pieces.append("'" + run.replace("'", "''") + "'")
    size = len(text) if length is None else max(length, len(text))
    return _cut(" || ".join(pieces), limit, "characters", size)


def shown_text(text: str | None, limit: int = VALUE_CHARS) -> Shown:
    """Schema text (a definition, a WHERE clause) as shown: one line, cut at `limit`."""
    if text is None:
        return None
    flat = "".join(" " if ch in _CONTROL else ch for ch in text)
    return _cut(flat[:limit], limit, "characters", len(flat))


def attribute_text(a: Mapping[str, Any]) -> str:
    """One `detail.attributes` item as words: `column t.c: collation NOCASE -> BINARY`,
    `index i: partial WHERE status = 'open' added`."""
    old, new = a.get("old"), a.get("new")
    if old is None and new is None:
        what = f"{a['attribute']} changed"
    elif old is None:
        what = f"{a['attribute']} {new} added"
    elif new is None:
        what = f"{a['attribute']} {old} removed"
    else:
        what = f"{a['attribute']} {old} -> {new}"
    return f"{a['object']}: {what}"


def example_text(e: Mapping[str, Any]) -> str:
    """One `detail.examples` item as words: `changed id=7: fax 'x' -> NULL`."""
    head = f"{e['change']} {e['key']}".rstrip()
    values = e.get("values") or []
    if not values:
        return head
    if e["change"] == "changed":
        parts = [f"{v['column']} {v['old']} -> {v['new']}" for v in values]
    else:
        parts = [f"{v['column']}={v['old'] if v['new'] is None else v['new']}" for v in values]
    return head + ": " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class RowExample:
    """One row that did not come back, as an engine found it, before the policy decides what
    may be shown: `key` is the key's (column, literal) pairs (every column, for a table without
    a usable key); `values` are (column, old literal, new literal) for the columns that differ
    (or all of the row's other columns, for a row missing or added)."""

    change: str  # "changed", "missing", "added"
    key: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, Shown, Shown], ...] = ()


def _name(text: str) -> str:
    return "".join("?" if ch in _CONTROL else ch for ch in text)[:1024] or "?"


def _matches(name: str, patterns: Iterable[str]) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


@dataclass(frozen=True, slots=True)
class ShowPolicy:
    """What a report may show of rows: how many per table, and which values never.

    A table matching a forbidden-object pattern shows no value at all (neither key nor
    column); a column matching a `[secrets] columns` pattern ("table.column", globs allowed)
    is listed in `columns_redacted` instead of its values, in keys too."""

    max_examples: int = DEFAULT_MAX_EXAMPLES
    secret_columns: tuple[str, ...] = ()
    forbidden_objects: tuple[str, ...] = ()

    def _names(self, table: str, column: str) -> list[str]:
        short = table.rsplit(".", 1)[-1]
        return [f"{table}.{column}", f"{short}.{column}"]

    def secret(self, table: str, column: str) -> bool:
        return any(_matches(n, self.secret_columns) for n in self._names(table, column))

    def forbidden(self, table: str) -> bool:
        short = table.rsplit(".", 1)[-1]
        return _matches(table, self.forbidden_objects) or _matches(short, self.forbidden_objects)


def show_examples(
    table: str,
    examples: Sequence[RowExample],
    total: int,
    policy: ShowPolicy,
) -> dict[str, Any]:
    """The report detail for a table's example rows: the first `policy.max_examples` as
    `examples`, the rest of the `total` rows that differ as `examples_omitted`, and the columns
    whose values were withheld as `columns_redacted`."""
    limit = max(0, min(policy.max_examples, MAX_EXAMPLES))
    columns = sorted(
        {c for e in examples for c, _v in e.key} | {c for e in examples for c, _o, _n in e.values}
    )
    if policy.forbidden(table):
        return {
            "examples": [],
            "examples_omitted": total,
            "columns_redacted": [_name(c) for c in columns],
        }
    redacted = sorted({c for c in columns if policy.secret(table, c)})
    shown: list[dict[str, Any]] = []
    for e in examples[:limit]:
        key = ", ".join(f"{_name(c)}={REDACTED if c in redacted else v}" for c, v in e.key)
        values = [
            {"column": _name(c), "old": old, "new": new}
            for c, old, new in e.values
            if c not in redacted
        ]
        shown.append({"change": e.change, "key": key, "values": values})
    out: dict[str, Any] = {"examples": shown, "examples_omitted": max(0, total - len(shown))}
    if redacted:
        out["columns_redacted"] = [_name(c) for c in redacted]
    return out


@dataclass(frozen=True, slots=True)
class RowSample:
    """The rows an engine found for one table that did not come back: the first of them, and
    how many there are. Carried on a `Difference` (never written as such: `show_examples`
    decides what of it the report shows)."""

    table: str
    examples: tuple[RowExample, ...]
    total: int
