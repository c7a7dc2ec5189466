"""Row- and column-level explanations of PostgreSQL fingerprint differences.

Two read-only connections, one to the pristine snapshot and one to the clone as it is now (the
two databases live on the same scratch server, but PostgreSQL cannot join across databases).
For a table with the same primary key in both, each side streams `(key, one digest per column)`
ordered by the key's text under `COLLATE "C"` (byte order, which is Python's code-point order
for UTF-8), and the two streams are merged: memory stays bounded whatever the table's size.
Explanations never decide a verdict (the fingerprints do); a table that cannot be explained
keeps its digest-level summary and says why.

A schema object that differs is explained from its two descriptions (the same ones the
fingerprint hashed, read through the same privilege masks): each attribute that differs, as
`detail.attributes` ({object, attribute, old, new}) and as a sentence a person can act on
(`table customer: GRANT UPDATE TO reporting not revoked`, `index items_name: definition ... ->
... WHERE (status = 'open'::text)`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NESTED = {"columns": "column", "constraints": "constraint", "policies": "policy", "rules": "rule"}
_ATTRIBUTE_LIMIT = 1000


def _shown(value: Any) -> str | None:
    """A value as the report shows it: text as itself, anything else as JSON; 4096 chars."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = _CONTROL.sub("?", text)
    return text if len(text) <= 4096 else text[:4093] + "..."


def _label(text: str) -> str:
    text = _NAME_CONTROL.sub(" ", text) or "?"
    return text if len(text) <= 1024 else text[:1021] + "..."


def _privilege(item: Sequence[Any]) -> str:
    grantee, privilege, grantor, grantable = item
    text = f"GRANT {privilege} TO {grantee}"
    if grantable:
        text += " WITH GRANT OPTION"
    return f"{text} (granted by {grantor})"


def _diff(label: str, old: Any, new: Any, out: list[tuple[str, str, Any, Any, str | None]]) -> None:
    """Append (object, attribute, old, new, sentence) for every attribute that differs."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        if old != new:
            out.append((label, "definition", old, new, None))
        return
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "acl" and isinstance(a, list | None) and isinstance(b, list | None):
            was = {tuple(i) for i in a or []}
            now = {tuple(i) for i in b or []}
            for item in sorted(now - was):
                grant = _privilege(item)
                out.append((label, "privilege", None, grant, f"{grant.split(' (')[0]} not revoked"))
            for item in sorted(was - now):
                grant = _privilege(item)
                out.append(
                    (label, "privilege", grant, None, f"{grant.split(' (')[0]} lost (not restored)")
                )
        elif key in _NESTED and isinstance(a, list | None) and isinstance(b, list | None):
            kind = _NESTED[key]
            by_a = {str(x.get("name")): x for x in a or [] if isinstance(x, dict)}
            by_b = {str(x.get("name")): x for x in b or [] if isinstance(x, dict)}
            for name in sorted(set(by_a) | set(by_b)):
                inner = f"{label} {kind} {name}"
                if name not in by_a:
                    out.append((label, kind, None, name, f"{kind} {name} added"))
                elif name not in by_b:
                    out.append((label, kind, name, None, f"{kind} {name} removed"))
                else:
                    _diff(inner, by_a[name], by_b[name], out)
            if [x.get("name") for x in a or [] if isinstance(x, dict)] != [
                x.get("name") for x in b or [] if isinstance(x, dict)
            ] and set(by_a) == set(by_b):
                out.append((label, f"{key} order", None, None, f"{key} reordered"))
        else:
            out.append((label, key, a, b, None))


def _sentence(obj: str, attribute: str, old: Any, new: Any, said: str | None) -> str:
    if said is not None:
        return f"{obj}: {said}"
    if attribute == "comment":
        if old is None:
            return f"{obj}: comment {_shown(new)!r} added"
        if new is None:
            return f"{obj}: comment {_shown(old)!r} removed"
    return f"{obj}: {attribute} {_shown(old)} -> {_shown(new)}"


def explain_schema(
    key: str, before: Sequence[Any] | None, now: Sequence[Any] | None
) -> tuple[str, list[dict[str, str | None]]]:
    """The sentence and the attribute changes for schema object `key` (`kind:name`)."""
    kind, _, name = key.partition(":")
    label = f"{kind.replace('_', ' ')} {name}"
    if before is None or now is None:
        what = "added" if before is None else "removed"
        return f"{label} {what}", [
            {
                "object": _label(label),
                "attribute": "existence",
                "old": None if before is None else "exists",
                "new": None if now is None else "exists",
            }
        ]
    changes: list[tuple[str, str, Any, Any, str | None]] = []
    if len(before) == len(now):
        for i, (a, b) in enumerate(zip(before, now, strict=True)):
            part = label if i == 0 else f"{label} ({(b or a).get('type', 'part')})"
            _diff(part, a, b, changes)
    else:
        changes.append((label, "definition", before, now, None))
    attributes = [
        {"object": _label(o), "attribute": _label(attr), "old": _shown(a), "new": _shown(b)}
        for o, attr, a, b, _said in changes[:_ATTRIBUTE_LIMIT]
    ]
    sentences = [_sentence(o, attr, a, b, said) for o, attr, a, b, said in changes]
    return "; ".join(sentences) or f"schema object {key} changed", attributes


def explain_differences(
    before: psycopg.Connection[Any],
    now: psycopg.Connection[Any],
    differences: Sequence[Difference],
    schema: tuple[Mapping[str, Sequence[Any]], Mapping[str, Sequence[Any]]] | None = None,
) -> list[Difference]:
    """Row-level detail for tables, attribute-level detail for schema objects (`schema`: the
    descriptions of both sides, as fingerprint.describe_schema gives them)."""
    out = []
    for d in differences:
        if schema is not None and d.component.startswith("schema:"):
            key = d.component.split(":", 1)[1]
            summary, attributes = explain_schema(key, schema[0].get(key), schema[1].get(key))
            out.append(
                Difference(d.component, d.kind, summary, {**d.detail, "attributes": attributes})
            )
            continue
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
