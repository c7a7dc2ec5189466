"""Row- and column-level explanations of PostgreSQL fingerprint differences.

Two read-only connections, one to the pristine snapshot and one to the clone as it is now (the
two databases live on the same scratch server, but PostgreSQL cannot join across databases).
For a table with the same primary key in both, each side streams `(key, one digest per column)`
ordered by the key's text under `COLLATE "C"` (byte order, which is Python's code-point order
for UTF-8), and the two streams are merged: memory stays bounded whatever the table's size.
Explanations never decide a verdict (the fingerprints do); a table that cannot be explained
keeps its digest-level summary and says why.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from rollproof.core.explain import keyed_row_summary
from rollproof.core.fingerprint import Difference
from rollproof.engines.postgres.conn import describe_error, quote_ident

_COLUMNS = """
SELECT a.attname FROM pg_catalog.pg_attribute a
WHERE a.attrelid = %s::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_PRIMARY_KEY = """
SELECT a.attname FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s::pg_catalog.regclass AND i.indisprimary ORDER BY k.position
"""
_NULL = "()"


def _n(value: int) -> str:
    return f"{value:,}"


def _relation(name: str) -> str:
    schema, _, table = name.rpartition(".")
    return f"{quote_ident(schema or 'public')}.{quote_ident(table)}"


def _names(conn: psycopg.Connection[Any], query: str, relation: str) -> list[str]:
    return [str(r[0]) for r in conn.execute(query, (relation,))]


def _stream(
    conn: psycopg.Connection[Any], relation: str, pk: list[str], cols: list[str]
) -> Iterator[tuple[str, list[str]]]:
    key = "ROW(" + ", ".join(quote_ident(k) for k in pk) + ")::text"
    values = ", ".join(
        f"CASE WHEN {quote_ident(c)} IS NULL THEN '{_NULL}' "
        f"ELSE pg_catalog.md5(ROW({quote_ident(c)})::text) END"
        for c in cols
    )
    select = f"SELECT {key} AS k" + (f", {values}" if values else "")
    query = f'{select} FROM ONLY {relation} ORDER BY ({key}) COLLATE "C"'
    with conn.cursor(name="rollproof_explain") as cur:
        cur.itersize = 5000
        cur.execute(query)
        for row in cur:
            yield str(row[0]), [str(v) for v in row[1:]]


def _explain_table(
    before: psycopg.Connection[Any], now: psycopg.Connection[Any], table: str
) -> tuple[str, dict[str, Any]]:
    relation = _relation(table)
    before_cols, now_cols = _names(before, _COLUMNS, relation), _names(now, _COLUMNS, relation)
    common = [c for c in now_cols if c in before_cols]
    dropped = [c for c in before_cols if c not in now_cols]
    added = [c for c in now_cols if c not in before_cols]
    detail: dict[str, Any] = {"columns_missing": dropped, "columns_added": added}
    parts: list[str] = []
    for c in dropped:
        row = before.execute(f"SELECT count({quote_ident(c)}) FROM ONLY {relation}").fetchone()
        lost = int(row[0]) if row else 0
        detail.setdefault("values_lost", {})[c] = lost
        parts.append(f"column {c} is gone ({_n(lost)} non-NULL values lost)")
    pk = _names(before, _PRIMARY_KEY, relation)
    if pk and pk == _names(now, _PRIMARY_KEY, relation):
        others = [c for c in common if c not in pk]
        missing = extra = changed = 0
        per_col: dict[str, int] = {}
        lost_col: dict[str, int] = {}
        with before.transaction(), now.transaction():
            old_rows = _stream(before, relation, pk, others)
            new_rows = _stream(now, relation, pk, others)
            old, new = next(old_rows, None), next(new_rows, None)
            while old is not None or new is not None:
                if new is None or (old is not None and old[0] < new[0]):
                    missing += 1
                    old = next(old_rows, None)
                elif old is None or new[0] < old[0]:
                    extra += 1
                    new = next(new_rows, None)
                else:
                    differs = False
                    for c, a, b in zip(others, old[1], new[1], strict=True):
                        if a != b:
                            differs = True
                            per_col[c] = per_col.get(c, 0) + 1
                            if b == _NULL:
                                lost_col[c] = lost_col.get(c, 0) + 1
                    changed += differs
                    old, new = next(old_rows, None), next(new_rows, None)
        summary, counts = keyed_row_summary(
            changed=changed, missing=missing, added=extra, per_column=per_col, now_null=lost_col
        )
        parts.extend(summary)
        detail.update(counts)
    if added:
        parts.append("new column(s) " + ", ".join(added))
    return f"table {table}: " + ("; ".join(parts) or "content differs"), detail


def explain_differences(
    before: psycopg.Connection[Any],
    now: psycopg.Connection[Any],
    differences: Sequence[Difference],
) -> list[Difference]:
    out = []
    for d in differences:
        if d.component.startswith("table:") and d.kind == "changed":
            try:
                summary, detail = _explain_table(before, now, d.component.split(":", 1)[1])
            except psycopg.Error as e:
                for conn in (before, now):
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        conn.rollback()
                out.append(
                    Difference(
                        d.component,
                        d.kind,
                        d.summary,
                        {**d.detail, "explain_error": describe_error(e)},
                    )
                )
                continue
            out.append(Difference(d.component, d.kind, summary, {**d.detail, **detail}))
            continue
        out.append(d)
    return out
