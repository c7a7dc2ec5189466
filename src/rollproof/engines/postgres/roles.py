"""Run-time surface enforcement on PostgreSQL: a scratch role granted only the declared objects.

Change scripts run logged in as a role made for the rehearsal (never `SET ROLE` from a
privileged session, which a script could simply `RESET`). In the snapshot database, before any
clone is made from it, the role is given:

* ownership of every existing object the change declares in `writes` (DDL such as ALTER TABLE,
  CREATE INDEX on it, DROP needs ownership), plus every table privilege on it;
* CREATE on the schema of each declared write that does not exist yet (the change creates it);
* SELECT on every declared read; USAGE on every schema;
* nothing on a forbidden object, even a declared one.

PUBLIC's privileges on relations and on SECURITY DEFINER functions are revoked in the clone, so
a write cannot borrow them. Owners and privileges are not part of the fingerprint, so none of
this changes a digest. The role is a member of `pg_read_all_data` without inheriting it: its
own statements cannot read an undeclared table, but rollproof can `SET ROLE` to it to take the
transaction leg's fingerprint inside the still-open transaction. When the policy only reports
undeclared reads, the role inherits it and reads are not denied.

An undeclared write is then refused by the server itself (SQLSTATE 42501), whatever path the
SQL takes: a trigger, a rule, a function, dynamic SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from rollproof.core.guard import SurfaceGuard, matches_any
from rollproof.core.policy import ReadMode
from rollproof.core.surface import AccessKind, ObjectType, StatementScope

_RELATION_KIND = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
    "f": "FOREIGN TABLE",
}


def normalize(name: str) -> str:
    """Declared and reported names: lower case, without `public.` (or SQLite's `main.`)."""
    lowered = name.strip().lower()
    for prefix in ("public.", "main."):
        lowered = lowered.removeprefix(prefix)
    return lowered


@dataclass(slots=True)
class Grants:
    role: str
    owned: list[str] = field(default_factory=list)
    readable: list[str] = field(default_factory=list)
    create_in: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"scripts run as role {self.role}: owns {', '.join(self.owned) or 'nothing'}; "
            f"may read {', '.join(self.readable) or 'nothing else'}; "
            f"may create in schema(s) {', '.join(self.create_in) or 'none'}"
        )


_OBJECTS = """
SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       c.relkind, n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""
_SCHEMAS = """
SELECT nspname FROM pg_catalog.pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
"""
_FUNCTIONS = """
SELECT CASE WHEN n.nspname = 'public' THEN p.proname ELSE n.nspname || '.' || p.proname END,
       p.oid::pg_catalog.regprocedure::text, p.prosecdef, p.prokind
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""
_TYPES = """
SELECT CASE WHEN n.nspname = 'public' THEN t.typname ELSE n.nspname || '.' || t.typname END,
       n.nspname, t.typname
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'c', 'r') AND t.typrelid = 0
AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""


_DEPENDENTS = """
SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       tn.nspname, t.relname
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
UNION ALL
SELECT CASE WHEN n.nspname = 'public' THEN tg.tgname ELSE n.nspname || '.' || tg.tgname END,
       n.nspname, t.relname
FROM pg_catalog.pg_trigger tg
JOIN pg_catalog.pg_class t ON t.oid = tg.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE NOT tg.tgisinternal
"""


def own_table(conn: psycopg.Connection[Any], role: str, schema: str, relname: str) -> None:
    conn.execute(
        sql.SQL("ALTER TABLE {} OWNER TO {}").format(
            sql.Identifier(schema, relname), sql.Identifier(role)
        )
    )


def tables_for_declared(
    scopes: Iterable[StatementScope], writes: Iterable[str], forbidden: Iterable[str]
) -> set[str]:
    """Tables whose ownership a script needs to create a declared index or trigger on them."""
    allowed = {normalize(w) for w in writes}
    forbidden = tuple(forbidden)
    out: set[str] = set()
    for scope in scopes:
        created = [
            a
            for a in scope.accesses
            if a.kind is AccessKind.CREATE
            and a.object_type in (ObjectType.INDEX, ObjectType.TRIGGER)
        ]
        if not created or not all(normalize(a.object) in allowed for a in created):
            continue
        for a in scope.accesses:
            if (
                a.kind is AccessKind.READ
                and a.object_type is ObjectType.TABLE
                and not matches_any(normalize(a.object), forbidden)
            ):
                out.add(normalize(a.object))
    return out


def grant_declared(
    conn: psycopg.Connection[Any],
    role: str,
    password: str,
    guard: SurfaceGuard,
) -> Grants:
    """Create `role` and grant it exactly the declared objects in the database of `conn`."""
    ident = sql.Identifier(role)
    inherit = sql.SQL("INHERIT" if guard.read_mode is ReadMode.REPORT else "NOINHERIT")
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(ident, inherit, sql.Literal(password))
    )
    conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(ident))
    grants = Grants(role)
    writes = {normalize(n) for n in guard.writes} - {
        n for n in (normalize(w) for w in guard.writes) if matches_any(n, guard.forbidden)
    }
    reads = {normalize(n) for n in guard.reads} - writes
    reads = {n for n in reads if not matches_any(n, guard.forbidden)}

    for (schema,) in conn.execute(_SCHEMAS).fetchall():
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
        )
    existing: set[str] = set()
    for name, relkind, schema, relname in conn.execute(_OBJECTS).fetchall():
        target = sql.Identifier(schema, relname)
        kind = sql.SQL(_RELATION_KIND[relkind])
        on = sql.SQL("SEQUENCE" if relkind == "S" else "TABLE")
        existing.add(name)
        # A privilege PUBLIC holds would let an undeclared write through.
        conn.execute(sql.SQL("REVOKE ALL ON {} {} FROM PUBLIC").format(on, target))
        if name in writes:
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(kind, target, ident))
            grants.owned.append(name)
        elif name in reads:
            conn.execute(sql.SQL("GRANT SELECT ON {} {} TO {}").format(on, target, ident))
            grants.readable.append(name)
    for name, signature, security_definer, prokind in conn.execute(_FUNCTIONS).fetchall():
        existing.add(name)
        what = sql.SQL("PROCEDURE" if prokind == "p" else "FUNCTION")
        if name in writes:
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(what, sql.SQL(signature), ident))
            grants.owned.append(f"{name}()")
        elif security_definer and prokind != "a":
            # A SECURITY DEFINER function runs with its owner's rights: it could write for us.
            conn.execute(
                sql.SQL("REVOKE EXECUTE ON {} {} FROM PUBLIC").format(what, sql.SQL(signature))
            )
    for name, schema, typname in conn.execute(_TYPES).fetchall():
        existing.add(name)
        if name in writes:
            conn.execute(
                sql.SQL("ALTER TYPE {} OWNER TO {}").format(sql.Identifier(schema, typname), ident)
            )
            grants.owned.append(name)
    # An index or trigger belongs to its table: creating or dropping one needs the table's
    # ownership, so a declared index or trigger brings its table's ownership with it.
    for name, schema, relname in conn.execute(_DEPENDENTS).fetchall():
        existing.add(name)
        if name in writes and name not in grants.owned:
            table = f"{schema}.{relname}" if schema != "public" else relname
            if table not in grants.owned:
                own_table(conn, role, schema, relname)
                grants.owned.append(table)
    schemas = {str(s) for (s,) in conn.execute(_SCHEMAS).fetchall()}
    for name in sorted(writes - existing):
        schema = name.split(".", 1)[0] if "." in name else "public"
        if schema in schemas and schema not in grants.create_in:
            conn.execute(
                sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
            )
            grants.create_in.append(schema)
    grants.owned.sort()
    grants.readable.sort()
    return grants


_DENIED = re.compile(
    r"^(?:permission denied for|must be owner of) "
    r"(?:table|relation|view|materialized view|sequence|schema|function|procedure|type|"
    r"index|foreign table|database) (?P<name>.+)$"
)
_VIA = re.compile(r"(?:PL/pgSQL |SQL )?function (?P<name>[\w.\"]+)\(")


def denied_object(message: str) -> str | None:
    """The object a permission error names (`permission denied for table t`), or None."""
    m = _DENIED.match(message.strip())
    return None if m is None else normalize(m.group("name").strip('"'))


def denied_kind(message: str, statement_kinds: dict[str, AccessKind], obj: str) -> AccessKind:
    """How the denied access touched `obj`, from the statement's own static scope."""
    if obj in statement_kinds:
        return statement_kinds[obj]
    return AccessKind.ALTER if message.startswith("must be owner") else AccessKind.WRITE


def denied_via(context: str | None) -> str | None:
    """The function (a trigger's, or one the statement called) the access happened in."""
    if not context:
        return None
    m = _VIA.search(context)
    return None if m is None else normalize(m.group("name").strip('"'))


# What a change run as its role can alter, for incremental after-fingerprints. The role holds
# the declared writes (and tables handed over for a declared CREATE INDEX/TRIGGER); through
# them a statement can reach further only by paths that run with someone else's privileges:
# foreign-key actions (run as the referenced table's owner), rules and updatable views (run
# as their owner), SECURITY DEFINER functions, triggers (whose functions may be any of these),
# event triggers. Any rule, user trigger, SECURITY DEFINER function or event trigger in the
# database, or a write privilege on a view, and nothing is assumed: every table is read.
_SYSTEM_NS = "n.nspname IN ('pg_catalog', 'information_schema')"
_OPAQUE_PATHS = f"""
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE NOT tgisinternal)
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger)
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r
               JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE r.rulename <> '_RETURN' AND NOT {_SYSTEM_NS})
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
               JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
               WHERE p.prosecdef AND NOT {_SYSTEM_NS})
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'v' AND NOT {_SYSTEM_NS}
                 AND (pg_catalog.pg_has_role(%(role)s, c.relowner, 'MEMBER')
                      OR pg_catalog.has_table_privilege(%(role)s, c.oid,
                                                        'INSERT, UPDATE, DELETE, TRUNCATE')
                      OR pg_catalog.has_any_column_privilege(%(role)s, c.oid,
                                                             'INSERT, UPDATE')))
"""

_NAMED = "CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END"

# Tables the role can write or own (fingerprint names).
_WRITABLE = f"""
SELECT {_NAMED} FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm')
  AND (pg_catalog.pg_has_role(%(role)s, c.relowner, 'MEMBER')
       OR pg_catalog.has_table_privilege(%(role)s, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
       OR pg_catalog.has_any_column_privilege(%(role)s, c.oid, 'INSERT, UPDATE'))
"""

# Edges along which a write to one table can change another: a foreign key with an action (the
# referenced table's delete or update changes the referencing one, as its owner), and
# inheritance both ways (a write to a parent reaches its partitions and children; each table is
# fingerprinted ONLY itself).
_REACHES = """
SELECT CASE WHEN fn.nspname = 'public' THEN fc.relname ELSE fn.nspname || '.' || fc.relname END,
       CASE WHEN tn.nspname = 'public' THEN tc.relname ELSE tn.nspname || '.' || tc.relname END
FROM (
    SELECT co.confrelid AS f, co.conrelid AS t FROM pg_catalog.pg_constraint co
    WHERE co.contype = 'f'
      AND (co.confdeltype NOT IN ('a', 'r') OR co.confupdtype NOT IN ('a', 'r'))
    UNION SELECT i.inhparent, i.inhrelid FROM pg_catalog.pg_inherits i
    UNION SELECT i.inhrelid, i.inhparent FROM pg_catalog.pg_inherits i
) e
JOIN pg_catalog.pg_class fc ON fc.oid = e.f
JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
JOIN pg_catalog.pg_class tc ON tc.oid = e.t
JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
"""


def writable_tables(conn: psycopg.Connection[Any], role: str) -> frozenset[str] | None:
    """Every table (fingerprint names) a change run as `role` can have altered, or None when
    the database has a path that would let it reach further (see _OPAQUE_PATHS)."""
    row = conn.execute(_OPAQUE_PATHS, {"role": role}).fetchone()
    if row is None or row[0]:
        return None
    reached = {str(name) for (name,) in conn.execute(_WRITABLE, {"role": role})}
    edges: dict[str, set[str]] = {}
    for f, t in conn.execute(_REACHES):
        edges.setdefault(str(f), set()).add(str(t))
    todo = list(reached)
    while todo:
        for t in edges.get(todo.pop(), ()):
            if t not in reached:
                reached.add(t)
                todo.append(t)
    return frozenset(reached)
