"""Words for a table whose rows did not come back: shared by every engine's explainer.

An engine counts, by primary key, the rows that went missing, appeared, or changed (per
column, and how many values were set before and are NULL now); this module turns the counts
into the detail recorded in the report and the sentence a person reads, so that SQLite and
PostgreSQL explain the same loss in the same words.
"""

from __future__ import annotations

from collections.abc import Mapping
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
