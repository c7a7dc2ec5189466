"""Row- and column-level explanations of fingerprint differences, for a person to act on.

Given a connection whose `main` is the clone as it is now and whose `before` is the pristine
snapshot (attached read-only), turn "table customers: content differs" into "customers: 8,123
rows differ; fax: 8,123 values lost (set before, NULL now)". Explanations never decide a
verdict (the fingerprints do); a table that cannot be explained keeps its digest-level summary
and says why.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from rollproof.core.explain import keyed_row_summary
from rollproof.core.fingerprint import Difference
from rollproof.engines.sqlite.schema import primary_key, quote_ident


def _cols(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [
        r[1]
        for r in conn.execute(f"PRAGMA {schema}.table_xinfo({quote_ident(table)})")
        if r[6] in (0, 2, 3)
    ]


def _n(value: int) -> str:
    return f"{value:,}"


def _explain_table(conn: sqlite3.Connection, table: str) -> tuple[str, dict[str, Any]]:
    t = quote_ident(table)
    before_cols, after_cols = _cols(conn, "before", table), _cols(conn, "main", table)
    common = [c for c in after_cols if c in before_cols]
    dropped = [c for c in before_cols if c not in after_cols]
    added_cols = [c for c in after_cols if c not in before_cols]
    detail: dict[str, Any] = {"columns_missing": dropped, "columns_added": added_cols}
    parts: list[str] = []

    for c in dropped:
        lost = conn.execute(f"SELECT count({quote_ident(c)}) FROM before.{t}").fetchone()[0]
        detail.setdefault("values_lost", {})[c] = lost
        parts.append(f"column {c} is gone ({_n(lost)} non-NULL values lost)")

    pk = primary_key(conn, table)
    if pk is not None and all(k in common for k in pk):
        on = " AND ".join(f"a.{quote_ident(k)} = b.{quote_ident(k)}" for k in pk)
        missing = conn.execute(
            f"SELECT count(*) FROM before.{t} b "
            f"WHERE NOT EXISTS (SELECT 1 FROM main.{t} a WHERE {on})"
        ).fetchone()[0]
        extra = conn.execute(
            f"SELECT count(*) FROM main.{t} a "
            f"WHERE NOT EXISTS (SELECT 1 FROM before.{t} b WHERE {on})"
        ).fetchone()[0]
        others = [c for c in common if c not in pk]
        per_col: dict[str, int] = {}
        lost_col: dict[str, int] = {}
        changed = 0
        if others:
            diff_exprs = [
                f"(a.{quote_ident(c)} IS NOT b.{quote_ident(c)} COLLATE BINARY "
                f"OR typeof(a.{quote_ident(c)}) <> typeof(b.{quote_ident(c)}))"
                for c in others
            ]
            lost_exprs = [
                f"(b.{quote_ident(c)} IS NOT NULL AND a.{quote_ident(c)} IS NULL)" for c in others
            ]
            select = ", ".join(
                [f"coalesce(sum({' OR '.join(diff_exprs)}), 0)"]
                + [f"coalesce(sum({d}), 0)" for d in diff_exprs]
                + [f"coalesce(sum({d}), 0)" for d in lost_exprs]
            )
            row = conn.execute(
                f"SELECT {select} FROM before.{t} b JOIN main.{t} a ON {on}"
            ).fetchone()
            changed = row[0]
            per_col = {c: v for c, v in zip(others, row[1 : 1 + len(others)], strict=True) if v}
            lost_col = {c: v for c, v in zip(others, row[1 + len(others) :], strict=True) if v}
        summary, counts = keyed_row_summary(
            changed=changed, missing=missing, added=extra, per_column=per_col, now_null=lost_col
        )
        parts.extend(summary)
        detail.update(counts)
    elif common:
        cols = ", ".join(quote_ident(c) for c in common)
        missing = conn.execute(
            f"SELECT count(*) FROM (SELECT {cols} FROM before.{t} "
            f"EXCEPT SELECT {cols} FROM main.{t})"
        ).fetchone()[0]
        extra = conn.execute(
            f"SELECT count(*) FROM (SELECT {cols} FROM main.{t} "
            f"EXCEPT SELECT {cols} FROM before.{t})"
        ).fetchone()[0]
        detail.update(distinct_rows_missing=missing, distinct_rows_added=extra)
        if missing:
            parts.append(f"{_n(missing)} distinct rows missing")
        if extra:
            parts.append(f"{_n(extra)} distinct rows added")
        if not missing and not extra:
            parts.append("same distinct rows, different duplicates or value types")
    if added_cols:
        parts.append("new column(s) " + ", ".join(added_cols))
    return f"table {table}: " + ("; ".join(parts) or "content differs"), detail


def _explain_schema(
    conn: sqlite3.Connection, component: str, kind: str
) -> tuple[str, dict[str, Any]] | None:
    _schema, objtype, name = component.split(":", 2)
    if objtype != "table" or kind != "changed":
        return None
    before_cols = [
        (r[1], r[2], r[3], r[4])
        for r in conn.execute(f"PRAGMA before.table_xinfo({quote_ident(name)})")
    ]
    after_cols = [
        (r[1], r[2], r[3], r[4])
        for r in conn.execute(f"PRAGMA main.table_xinfo({quote_ident(name)})")
    ]
    bnames, anames = [c[0] for c in before_cols], [c[0] for c in after_cols]
    notes = []
    gone = [n for n in bnames if n not in anames]
    new = [n for n in anames if n not in bnames]
    if gone:
        notes.append("columns removed: " + ", ".join(gone))
    if new:
        notes.append("columns added: " + ", ".join(new))
    if not gone and not new and bnames != anames:
        notes.append("column order changed: " + ", ".join(bnames) + " -> " + ", ".join(anames))
    changed = [b[0] for b in before_cols for a in after_cols if a[0] == b[0] and a != b]
    if changed:
        notes.append("column definitions changed: " + ", ".join(changed))
    if not notes:
        notes.append("constraints, collations or flags changed")
    return f"schema of table {name}: " + "; ".join(notes), {
        "columns_before": bnames,
        "columns_after": anames,
    }


def explain_differences(
    conn: sqlite3.Connection, differences: Sequence[Difference]
) -> list[Difference]:
    out = []
    for d in differences:
        try:
            if d.component.startswith("table:") and d.kind == "changed":
                summary, detail = _explain_table(conn, d.component.split(":", 1)[1])
                out.append(Difference(d.component, d.kind, summary, {**d.detail, **detail}))
                continue
            if d.component.startswith("schema:"):
                explained = _explain_schema(conn, d.component, d.kind)
                if explained is not None:
                    out.append(
                        Difference(d.component, d.kind, explained[0], {**d.detail, **explained[1]})
                    )
                    continue
        except sqlite3.Error as e:
            out.append(
                Difference(d.component, d.kind, d.summary, {**d.detail, "explain_error": str(e)})
            )
            continue
        out.append(d)
    return out
