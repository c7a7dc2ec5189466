"""Row- and column-level explanations of PostgreSQL fingerprint differences.

Two read-only connections, one to the pristine snapshot and one to the clone as it is now (the
two databases live on the same scratch server, but PostgreSQL cannot join across databases),
both under the fingerprint's fixed rendering settings. Memory stays bounded whatever a table's
size: each side streams one line per row in the same order, the two streams are merged, and
only the first rows that differ (at most MAX_EXAMPLES) are kept and then read back by a second
query for their values.

* A table with the same primary key on both sides streams `(key, one digest per column)`,
  ordered by the key's text under `COLLATE "C"` (byte order, which is Python's code-point order
  for UTF-8): rows changed (and which columns, how many now NULL), missing and added.
* A table without one, or whose key changed, is compared as a multiset of whole rows: each
  side streams `(the row's text cut to ROW_PREFIX characters, md5 of the row's text)`, ordered
  by the prefix's UTF-8 bytes and then the digest, so copies of one row are adjacent and pair
  off; the copies left over are rows missing or added.

The rows kept become a `RowSample` (key and old -> new values as SQL literals, or the whole row
without a key), of which the rehearsal's `ShowPolicy` decides what the report shows, exactly as
for SQLite. Explanations never decide a verdict (the fingerprints do); a table that cannot be
explained keeps its digest-level summary and says why.

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
from dataclasses import dataclass
from typing import Any

import psycopg

from rollproof.core.explain import (
    MAX_EXAMPLES,
    VALUE_CHARS,
    RowExample,
    RowSample,
    Shown,
    keyed_row_summary,
    sql_literal,
)
from rollproof.core.fingerprint import Difference
from rollproof.engines.postgres.conn import describe_error, quote_ident
from rollproof.engines.postgres.fingerprint import prepare_session

_COLUMNS = """
SELECT a.attname,
       CASE WHEN b.oid = 'pg_catalog.bytea'::pg_catalog.regtype THEN 'bytes'
            WHEN b.typcategory = 'N' THEN 'number'
            WHEN b.typcategory = 'B' THEN 'bool'
            ELSE 'text' END
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_type b ON b.oid = COALESCE(NULLIF(t.typbasetype, 0), t.oid)
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
ROW_PREFIX = 64
"""Characters of a row's text streamed (with its digest) to order a table without a key."""
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _n(value: int) -> str:
    return f"{value:,}"


def _relation(name: str) -> str:
    schema, _, table = name.rpartition(".")
    return f"{quote_ident(schema or 'public')}.{quote_ident(table)}"


def _names(conn: psycopg.Connection[Any], query: str, relation: str) -> list[str]:
    return [str(r[0]) for r in conn.execute(query, (relation,))]


def _kinds(conn: psycopg.Connection[Any], relation: str) -> dict[str, str]:
    """Each column and how its values are written: bytes, number, bool or text."""
    return {str(r[0]): str(r[1]) for r in conn.execute(_COLUMNS, (relation,))}


def _row_text(cols: Sequence[str]) -> str:
    return "ROW(" + ", ".join(quote_ident(c) for c in cols) + ")::pg_catalog.text"


def _stream(
    conn: psycopg.Connection[Any], relation: str, pk: list[str], cols: list[str]
) -> Iterator[tuple[str, list[str]]]:
    key = _row_text(pk)
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


def _whole_rows(
    conn: psycopg.Connection[Any], relation: str, cols: list[str]
) -> Iterator[tuple[str, str]]:
    """(prefix of the row's text, md5 of it) for every row, copies adjacent, in an order Python
    compares the same way (the prefix's UTF-8 bytes, then the hex digest)."""
    query = (
        f"SELECT pg_catalog.left(r, {ROW_PREFIX}), pg_catalog.md5(r) "
        f"FROM (SELECT {_row_text(cols)} AS r FROM ONLY {relation}) s "
        f"ORDER BY pg_catalog.convert_to(pg_catalog.left(r, {ROW_PREFIX}), 'UTF8'), "
        'pg_catalog.md5(r) COLLATE "C"'
    )
    with conn.cursor(name="rollproof_explain") as cur:
        cur.itersize = 5000
        cur.execute(query)
        for row in cur:
            yield str(row[0]), str(row[1])


def _shown_columns(cols: Sequence[tuple[str, str]]) -> str:
    """Each column's start (what a literal shows, and one more) and its whole length."""
    out = []
    for c, kind in cols:
        q = quote_ident(c)
        if kind == "bytes":
            out.append(f"pg_catalog.substr({q}, 1, {VALUE_CHARS // 2 + 1}), pg_catalog.length({q})")
        else:
            text = f"{q}::pg_catalog.text"
            out.append(f"pg_catalog.left({text}, {VALUE_CHARS + 1}), pg_catalog.length({text})")
    return ", ".join(out)


def _literal(kind: str, value: Any, length: Any) -> str:
    """A PostgreSQL value as the report writes it: `NULL`, `42`, `1.50`, `true`, `'it''s'`,
    `X'00FF'` (bytea), anything else as its quoted text (`'2026-01-01'`, `'{1,2}'`)."""
    if value is None:
        return "NULL"
    size = int(length)
    if kind == "bytes":
        return sql_literal(bytes(value), length=size)
    text = str(value)
    if kind == "bool" and text in ("true", "false"):
        return text
    if kind == "number" and _NUMBER.fullmatch(text):
        if size <= VALUE_CHARS:
            return text
        return f"{text[:VALUE_CHARS]}… ({size:,} characters)"
    return sql_literal(text, length=size)


def _fetch(
    conn: psycopg.Connection[Any],
    relation: str,
    match: str,
    wanted: Sequence[str],
    cols: Sequence[tuple[str, str]],
) -> dict[str, list[str]]:
    """The literals of one row for each value of the expression `match` in `wanted` (the
    first row found: copies of a row print the same); stops reading once each is found."""
    found: dict[str, list[str]] = {}
    targets = sorted(set(wanted))
    if not targets:
        return found
    shown = _shown_columns(cols)
    query = (
        f"SELECT {match}" + (f", {shown}" if shown else "") + f" FROM ONLY {relation} "
        f"WHERE {match} = ANY(%s::pg_catalog.text[])"
    )
    with conn.transaction(), conn.cursor(name="rollproof_examples") as cur:
        cur.itersize = 100
        cur.execute(query, (targets,))
        for row in cur:
            key = str(row[0])
            if key not in found:
                found[key] = [
                    _literal(kind, row[1 + 2 * i], row[2 + 2 * i])
                    for i, (_c, kind) in enumerate(cols)
                ]
                if len(found) == len(targets):
                    break
    return found


@dataclass(frozen=True, slots=True)
class _Pick:
    """A row that differs, remembered until its values are read: how, and by what it is found
    (the key's text, or the row's digest), and for a changed row the columns that differ."""

    change: str
    match: str
    columns: tuple[str, ...] = ()


def _keyed(
    before: psycopg.Connection[Any],
    now: psycopg.Connection[Any],
    relation: str,
    pk: list[str],
    others: list[str],
    cap: int,
) -> tuple[list[str], dict[str, Any], list[_Pick], int]:
    missing = extra = changed = 0
    per_col: dict[str, int] = {}
    lost_col: dict[str, int] = {}
    picks: list[_Pick] = []
    with before.transaction(), now.transaction():
        old_rows = _stream(before, relation, pk, others)
        new_rows = _stream(now, relation, pk, others)
        old, new = next(old_rows, None), next(new_rows, None)
        while old is not None or new is not None:
            if old is not None and (new is None or old[0] < new[0]):
                missing += 1
                if len(picks) < cap:
                    picks.append(_Pick("missing", old[0]))
                old = next(old_rows, None)
            elif new is not None and (old is None or new[0] < old[0]):
                extra += 1
                if len(picks) < cap:
                    picks.append(_Pick("added", new[0]))
                new = next(new_rows, None)
            elif old is not None and new is not None:
                differing: list[str] = []
                for c, a, b in zip(others, old[1], new[1], strict=True):
                    if a != b:
                        differing.append(c)
                        per_col[c] = per_col.get(c, 0) + 1
                        if b == _NULL:
                            lost_col[c] = lost_col.get(c, 0) + 1
                if differing:
                    changed += 1
                    if len(picks) < cap:
                        picks.append(_Pick("changed", old[0], tuple(differing)))
                old, new = next(old_rows, None), next(new_rows, None)
    parts, counts = keyed_row_summary(
        changed=changed, missing=missing, added=extra, per_column=per_col, now_null=lost_col
    )
    return parts, counts, picks, changed + missing + extra


def _keyed_examples(
    before: psycopg.Connection[Any],
    now: psycopg.Connection[Any],
    relation: str,
    pk: list[str],
    others: list[str],
    picks: list[_Pick],
) -> list[RowExample]:
    """Key and old -> new literals of the rows picked, read back by their key's text."""
    cols = [*pk, *others]
    kinds = (_kinds(before, relation), _kinds(now, relation))
    key = _row_text(pk)
    old = _fetch(
        before,
        relation,
        key,
        [p.match for p in picks if p.change != "added"],
        [(c, kinds[0].get(c, "text")) for c in cols],
    )
    new = _fetch(
        now,
        relation,
        key,
        [p.match for p in picks if p.change != "missing"],
        [(c, kinds[1].get(c, "text")) for c in cols],
    )
    out: list[RowExample] = []
    width = len(pk)
    for p in picks:
        a, b = old.get(p.match), new.get(p.match)
        row = a if b is None else b
        if row is None or (p.change == "changed" and (a is None or b is None)):
            continue  # not found again: nothing honest to show for it
        keys = tuple(zip(pk, (a or row)[:width], strict=True))
        values: list[tuple[str, Shown, Shown]] = []
        for i, c in enumerate(others):
            if p.change == "changed" and a is not None and b is not None:
                if c in p.columns:
                    values.append((c, a[width + i], b[width + i]))
            elif p.change == "missing":
                values.append((c, row[width + i], None))
            else:
                values.append((c, None, row[width + i]))
        out.append(RowExample(p.change, keys, tuple(values)))
    return out


def _whole(
    before: psycopg.Connection[Any],
    now: psycopg.Connection[Any],
    relation: str,
    cols: list[str],
    cap: int,
) -> tuple[int, int, list[RowExample]]:
    """Rows missing and added, compared as multisets of whole rows, and the first of them."""
    missing = extra = 0
    picks: list[_Pick] = []
    with before.transaction(), now.transaction():
        old_rows, new_rows = _whole_rows(before, relation, cols), _whole_rows(now, relation, cols)
        old, new = next(old_rows, None), next(new_rows, None)
        while old is not None or new is not None:
            if old is not None and (new is None or old < new):
                missing += 1
                if len(picks) < cap:
                    picks.append(_Pick("missing", old[1]))
                old = next(old_rows, None)
            elif new is not None and (old is None or new < old):
                extra += 1
                if len(picks) < cap:
                    picks.append(_Pick("added", new[1]))
                new = next(new_rows, None)
            else:
                old, new = next(old_rows, None), next(new_rows, None)
    digest = f"pg_catalog.md5({_row_text(cols)})"
    shown: dict[str, dict[str, list[str]]] = {}
    for change, conn in (("missing", before), ("added", now)):
        kinds = _kinds(conn, relation)
        shown[change] = _fetch(
            conn,
            relation,
            digest,
            [p.match for p in picks if p.change == change],
            [(c, kinds.get(c, "text")) for c in cols],
        )
    examples = [
        RowExample(p.change, tuple(zip(cols, shown[p.change][p.match], strict=True)))
        for p in picks
        if p.match in shown[p.change]
    ]
    return missing, extra, examples


def _explain_table(
    before: psycopg.Connection[Any],
    now: psycopg.Connection[Any],
    table: str,
    cap: int = MAX_EXAMPLES,
) -> tuple[str, dict[str, Any], RowSample | None]:
    relation = _relation(table)
    before_cols, now_cols = _names(before, _COLUMNS, relation), _names(now, _COLUMNS, relation)
    common = [c for c in now_cols if c in before_cols]
    dropped = [c for c in before_cols if c not in now_cols]
    added = [c for c in now_cols if c not in before_cols]
    detail: dict[str, Any] = {"columns_missing": dropped, "columns_added": added}
    parts: list[str] = []
    sample: RowSample | None = None
    for c in dropped:
        row = before.execute(f"SELECT count({quote_ident(c)}) FROM ONLY {relation}").fetchone()
        lost = int(row[0]) if row else 0
        detail.setdefault("values_lost", {})[c] = lost
        parts.append(f"column {c} is gone ({_n(lost)} non-NULL values lost)")
    pk = _names(before, _PRIMARY_KEY, relation)
    if pk and pk == _names(now, _PRIMARY_KEY, relation) and all(k in common for k in pk):
        others = [c for c in common if c not in pk]
        summary, counts, picks, total = _keyed(before, now, relation, pk, others, cap)
        parts.extend(summary)
        detail.update(counts)
        if total:
            examples = _keyed_examples(before, now, relation, pk, others, picks)
            sample = RowSample(table, tuple(examples), total)
    elif common:
        missing, extra, examples = _whole(before, now, relation, common, cap)
        detail.update(rows_missing=missing, rows_added=extra)
        why = "no primary key" if not pk else "the primary key changed"
        if missing:
            parts.append(f"{_n(missing)} rows missing")
        if extra:
            parts.append(f"{_n(extra)} rows added")
        if missing or extra:
            parts.append(f"rows compared whole ({why})")
            sample = RowSample(table, tuple(examples), missing + extra)
        else:
            parts.append("the same rows, compared whole: the columns' types or order differ")
    if added:
        parts.append("new column(s) " + ", ".join(added))
    return f"table {table}: " + ("; ".join(parts) or "content differs"), detail, sample


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
    for conn in (before, now):
        prepare_session(conn)
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
                summary, detail, sample = _explain_table(before, now, d.component.split(":", 1)[1])
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
            out.append(
                Difference(d.component, d.kind, summary, {**d.detail, **detail}, rows=sample)
            )
            continue
        out.append(d)
    return out
