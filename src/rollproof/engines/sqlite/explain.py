"""Row- and column-level explanations of fingerprint differences, for a person to act on.

Given a connection whose `main` is the clone as it is now and whose `before` is the pristine
snapshot (attached read-only), turn "table customers: content differs" into "customers: 8,123
rows differ; fax: 8,123 values lost (set before, NULL now)", with the first rows that differ
(their key, or the whole row without a key, and old -> new values: a `RowSample`, of which the
rehearsal's `ShowPolicy` decides what the report shows), and turn "schema object index:i
changed" into "index i: partial WHERE status = 'open' added" (`detail.attributes`: object,
attribute, old -> new). Explanations never decide a verdict (the fingerprints do); a table that
cannot be explained keeps its digest-level summary and says why.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rollproof.core.explain import (
    MAX_EXAMPLES,
    RowExample,
    RowSample,
    Shown,
    attribute_text,
    keyed_row_summary,
    shown_text,
    sql_literal,
)
from rollproof.core.fingerprint import Difference
from rollproof.core.surface import fold_name
from rollproof.engines.sqlite.schema import (
    describe_table,
    display_sql,
    index_parts,
    primary_key,
    quote_ident,
    table_flags,
    table_parts,
)

SUMMARY_ATTRIBUTES = 3
"""Attributes named in a schema difference's summary line; all of them are in its detail."""


def _cols(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [
        r[1]
        for r in conn.execute(f"PRAGMA {schema}.table_xinfo({quote_ident(table)})")
        if r[6] in (0, 2, 3)
    ]


def _n(value: int) -> str:
    return f"{value:,}"


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _differs(a: str, b: str) -> str:
    return f"({a} IS NOT {b} COLLATE BINARY OR typeof({a}) <> typeof({b}))"


def _keyed_examples(
    conn: sqlite3.Connection, t: str, pk: list[str], others: list[str], on: str, cap: int
) -> list[RowExample]:
    """The first rows (in key order) that changed, went missing, or appeared, up to `cap`."""
    q = quote_ident
    order = ", ".join(f"{q(k)}" for k in pk)
    out: list[RowExample] = []
    if others:
        diff = " OR ".join(_differs(f"a.{q(c)}", f"b.{q(c)}") for c in others)
        select = ", ".join([f"b.{q(k)}" for k in pk] + [f"b.{q(c)}, a.{q(c)}" for c in others])
        rows = conn.execute(
            f"SELECT {select} FROM before.{t} b JOIN main.{t} a ON {on} WHERE {diff} "
            f"ORDER BY {', '.join(f'b.{q(k)}' for k in pk)} LIMIT {cap}"
        )
        for row in rows:
            key = tuple((k, sql_literal(v)) for k, v in zip(pk, row, strict=False))
            values: list[tuple[str, Shown, Shown]] = []
            for i, c in enumerate(others):
                old, new = row[len(pk) + 2 * i], row[len(pk) + 2 * i + 1]
                if old != new or type(old) is not type(new) or repr(old) != repr(new):
                    values.append((c, sql_literal(old), sql_literal(new)))
            out.append(RowExample("changed", key, tuple(values)))
    for change, here, there, alias in (
        ("missing", "before", "main", "b"),
        ("added", "main", "before", "a"),
    ):
        if len(out) >= cap:
            break
        other = "a" if alias == "b" else "b"
        select = ", ".join(f"{alias}.{q(c)}" for c in [*pk, *others])
        rows = conn.execute(
            f"SELECT {select} FROM {here}.{t} {alias} WHERE NOT EXISTS "
            f"(SELECT 1 FROM {there}.{t} {other} WHERE {on}) ORDER BY {order} "
            f"LIMIT {cap - len(out)}"
        )
        for row in rows:
            key = tuple((k, sql_literal(v)) for k, v in zip(pk, row, strict=False))
            rest = row[len(pk) :]
            values = [
                (c, sql_literal(v), None) if change == "missing" else (c, None, sql_literal(v))
                for c, v in zip(others, rest, strict=True)
            ]
            out.append(RowExample(change, key, tuple(values)))
    return out


def _unkeyed_examples(
    conn: sqlite3.Connection, t: str, common: list[str], cap: int
) -> list[RowExample]:
    """The first distinct rows missing and added (the whole row is the key), up to `cap`."""
    cols = ", ".join(quote_ident(c) for c in common)
    out: list[RowExample] = []
    for change, here, there in (("missing", "before", "main"), ("added", "main", "before")):
        if len(out) >= cap:
            break
        rows = conn.execute(
            f"SELECT * FROM (SELECT {cols} FROM {here}.{t} EXCEPT SELECT {cols} FROM {there}.{t}) "
            f"LIMIT {cap - len(out)}"
        )
        for row in rows:
            key = tuple((c, sql_literal(v)) for c, v in zip(common, row, strict=True))
            out.append(RowExample(change, key))
    return out


def _explain_table(
    conn: sqlite3.Connection, table: str, cap: int = MAX_EXAMPLES
) -> tuple[str, dict[str, Any], RowSample | None]:
    t = quote_ident(table)
    before_cols, after_cols = _cols(conn, "before", table), _cols(conn, "main", table)
    common = [c for c in after_cols if c in before_cols]
    dropped = [c for c in before_cols if c not in after_cols]
    added_cols = [c for c in after_cols if c not in before_cols]
    detail: dict[str, Any] = {"columns_missing": dropped, "columns_added": added_cols}
    parts: list[str] = []
    sample: RowSample | None = None

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
            diff_exprs = [_differs(f"a.{quote_ident(c)}", f"b.{quote_ident(c)}") for c in others]
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
        if changed or missing or extra:
            examples = _keyed_examples(conn, t, pk, others, on, cap)
            sample = RowSample(table, tuple(examples), changed + missing + extra)
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
        if missing or extra:
            examples = _unkeyed_examples(conn, t, common, cap)
            sample = RowSample(table, tuple(examples), missing + extra)
    if added_cols:
        parts.append("new column(s) " + ", ".join(added_cols))
    return f"table {table}: " + ("; ".join(parts) or "content differs"), detail, sample


# --- schema objects: object, attribute, old -> new -----------------------------------------

_HIDDEN = {0: "stored", 1: "hidden", 2: "generated VIRTUAL", 3: "generated STORED"}


def _schema_row(
    conn: sqlite3.Connection, schema: str, kind: str, name: str
) -> tuple[str, str] | None:
    row = conn.execute(
        f"SELECT sql, tbl_name FROM {schema}.sqlite_schema WHERE type = ? AND name = ?",
        (kind, name),
    ).fetchone()
    return None if row is None else (str(row[0] or ""), str(row[1]))


def _attribute(obj: str, attribute: str, old: object, new: object) -> dict[str, Any]:
    return {
        "object": obj,
        "attribute": attribute,
        "old": shown_text(None if old is None else str(old)),
        "new": shown_text(None if new is None else str(new)),
    }


def _where_they_differ(old: str, new: str, context: int = 20) -> tuple[str, str]:
    """Two long texts shown from a little before where they first differ."""
    k = 0
    while k < min(len(old), len(new)) and old[k] == new[k]:
        k += 1
    start = max(0, k - context)
    if start == 0:
        return old, new
    return "…" + old[start:], "…" + new[start:]


def _text_attribute(obj: str, attribute: str, old: str | None, new: str | None) -> dict[str, Any]:
    if old is not None and new is not None:
        old, new = _where_they_differ(old, new)
    return _attribute(obj, attribute, old, new)


def _column_facts(conn: sqlite3.Connection, schema: str, table: str) -> dict[str, dict[str, Any]]:
    facts: dict[str, dict[str, Any]] = {}
    for _cid, col, ctype, notnull, dflt, pk, hidden in conn.execute(
        f"PRAGMA {schema}.table_xinfo({quote_ident(table)})"
    ):
        facts[col] = {
            "type": ctype or "(none)",
            "NOT NULL": "NOT NULL" if notnull else "nullable",
            "default": "(none)" if dflt is None else dflt,
            "primary key": f"position {pk}" if pk else "not in the primary key",
            "storage": _HIDDEN.get(hidden, str(hidden)),
        }
    return facts


def _table_attributes(conn: sqlite3.Connection, name: str) -> list[dict[str, Any]]:
    b_row, a_row = (
        _schema_row(conn, "before", "table", name),
        _schema_row(conn, "main", "table", name),
    )
    if b_row is None or a_row is None:
        return []
    b_sql, a_sql = b_row[0], a_row[0]
    b_flags = table_flags(conn, "before").get(name, {})
    a_flags = table_flags(conn, "main").get(name, {})
    if "virtual" in (b_flags.get("type"), a_flags.get("type")):
        return [
            _text_attribute(f"table {name}", "definition", display_sql(b_sql), display_sql(a_sql))
        ]
    b_desc = describe_table(conn, name, b_sql, b_flags, "before")
    a_desc = describe_table(conn, name, a_sql, a_flags, "main")
    b_cols, a_cols = _column_facts(conn, "before", name), _column_facts(conn, "main", name)
    (b_defs, b_cons), (a_defs, a_cons) = table_parts(b_sql), table_parts(a_sql)
    b_coll = {c["name"]: c["collation"] for c in b_desc["columns"]}
    a_coll = {c["name"]: c["collation"] for c in a_desc["columns"]}
    out: list[dict[str, Any]] = []
    table_obj = f"table {name}"
    for col in b_cols:
        if col not in a_cols:
            out.append(_attribute(table_obj, f"column {col}", b_defs.get(fold_name(col), ""), None))
    for col in a_cols:
        if col not in b_cols:
            out.append(_attribute(table_obj, f"column {col}", None, a_defs.get(fold_name(col), "")))
    common_b = [c for c in b_cols if c in a_cols]
    common_a = [c for c in a_cols if c in b_cols]
    if common_b != common_a:
        out.append(_attribute(table_obj, "column order", ", ".join(b_cols), ", ".join(a_cols)))
    for col in common_a:
        obj = f"column {name}.{col}"
        found = False
        b_fact = {**b_cols[col], "collation": b_coll.get(col, "BINARY")}
        a_fact = {**a_cols[col], "collation": a_coll.get(col, "BINARY")}
        for attr, old in b_fact.items():
            if a_fact[attr] != old:
                out.append(_attribute(obj, attr, old, a_fact[attr]))
                found = True
        b_def, a_def = b_defs.get(fold_name(col), ""), a_defs.get(fold_name(col), "")
        b_norm = next((c["definition"] for c in b_desc["columns"] if c["name"] == col), "")
        a_norm = next((c["definition"] for c in a_desc["columns"] if c["name"] == col), "")
        if not found and b_norm != a_norm:
            out.append(_text_attribute(obj, "definition", b_def, a_def))
    if b_desc["table_constraints"] != a_desc["table_constraints"]:
        for text in b_cons:
            if text not in a_cons:
                out.append(_attribute(table_obj, "constraint", text, None))
        for text in a_cons:
            if text not in b_cons:
                out.append(_attribute(table_obj, "constraint", None, text))
    for flag, label in (("without_rowid", "WITHOUT ROWID"), ("strict", "STRICT")):
        if b_desc[flag] != a_desc[flag]:
            out.append(
                _attribute(
                    table_obj,
                    label,
                    "yes" if b_desc[flag] else "no",
                    "yes" if a_desc[flag] else "no",
                )
            )
    if not out:
        out.append(_text_attribute(table_obj, "definition", display_sql(b_sql), display_sql(a_sql)))
    return out


def _object_attributes(
    conn: sqlite3.Connection, objtype: str, name: str, kind: str
) -> list[dict[str, Any]]:
    b_row = _schema_row(conn, "before", objtype, name)
    a_row = _schema_row(conn, "main", objtype, name)
    obj = f"{objtype} {name}"
    if b_row is None or a_row is None or kind != "changed":
        old = None if b_row is None else display_sql(b_row[0])
        new = None if a_row is None else display_sql(a_row[0])
        return [_attribute(obj, "definition", old, new)]
    if objtype == "table":
        return _table_attributes(conn, name)
    if objtype == "index":
        b_parts, a_parts = index_parts(b_row[0]), index_parts(a_row[0])
        out = [
            _text_attribute(obj, attr, old, a_parts.get(attr))
            for attr, old in b_parts.items()
            if a_parts.get(attr) != old
        ]
        if out:
            return out
    return [_text_attribute(obj, "definition", display_sql(b_row[0]), display_sql(a_row[0]))]


def _explain_schema(
    conn: sqlite3.Connection, component: str, kind: str
) -> tuple[str, dict[str, Any]] | None:
    _schema, objtype, name = component.split(":", 2)
    attributes = _object_attributes(conn, objtype, name, kind)
    if not attributes:
        return None
    detail: dict[str, Any] = {"attributes": attributes}
    if objtype == "table" and kind == "changed":
        detail["columns_before"] = _cols(conn, "before", name)
        detail["columns_after"] = _cols(conn, "main", name)
    words = [attribute_text(a) for a in attributes[:SUMMARY_ATTRIBUTES]]
    if len(attributes) > SUMMARY_ATTRIBUTES:
        words.append(f"and {len(attributes) - SUMMARY_ATTRIBUTES} more")
    return "; ".join(words), detail


def explain_differences(
    conn: sqlite3.Connection, differences: Sequence[Difference]
) -> list[Difference]:
    """Each difference with row- or attribute-level detail added where it can be found.

    `conn` must have the clone as `main` and the snapshot attached as `before`."""
    conn.text_factory = _lenient_text
    out = []
    for d in differences:
        try:
            if d.component.startswith("table:") and d.kind == "changed":
                summary, detail, sample = _explain_table(conn, d.component.split(":", 1)[1])
                out.append(replace(d, summary=summary, detail={**d.detail, **detail}, rows=sample))
                continue
            if d.component.startswith("schema:"):
                explained = _explain_schema(conn, d.component, d.kind)
                if explained is not None:
                    out.append(
                        replace(d, summary=explained[0], detail={**d.detail, **explained[1]})
                    )
                    continue
        except sqlite3.Error as e:
            out.append(replace(d, detail={**d.detail, "explain_error": str(e)}))
            continue
        out.append(d)
    return out
