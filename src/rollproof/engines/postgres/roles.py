"""Run-time surface enforcement on PostgreSQL: a scratch role granted only the declared objects.

Change scripts run logged in as a role made for the rehearsal (never `SET ROLE` from a
privileged session, which a script could simply `RESET`). In the snapshot database, before any
clone is made from it, the role is given:

* ownership of every existing object the change declares in `writes` (DDL such as ALTER TABLE,
  CREATE INDEX on it, DROP needs ownership), plus every table privilege on it; a declared
  schema too (ALTER SCHEMA needs it), unless it holds a forbidden object or one reaching one;
* CREATE on the schema of each declared write that does not exist yet (the change creates it);
* SELECT on every declared read, and REFERENCES on a declared table (a foreign key the change
  adds may point at a table it only reads; an undeclared parent stays refused); USAGE on every
  schema;
* nothing on a forbidden object, even a declared one, and nothing on an object that reaches
  one with someone else's privileges (`forbidden_reach`): a view or materialized view whose
  definition reads it (directly, or through other views, or through a SECURITY DEFINER
  function), a SECURITY DEFINER function that reads it, a table whose rules read it or whose
  triggers run such a function. A view with `security_invoker` reads as the role, which may
  not read the forbidden table itself, so it needs no exclusion. "Forbidden" means
  unreachable: a read through any of these is refused by the server and recorded as an
  attempt on the forbidden object, via the object the statement named (`reached_through`).

PUBLIC's privileges on relations and on SECURITY DEFINER functions (and on functions that are
forbidden or reach a forbidden object) are revoked in the clone, so a write cannot borrow them.
Owners and privileges are not part of the fingerprint, so none of this changes a digest.

The role is a member of no other role while a script runs: rollproof's own read inside the
still-open transaction (the transaction leg's fingerprint) needs `pg_read_all_data`, which is
granted for that read only, after the script's last statement, and revoked at once
(`lend_read_all`). A role that were a member all along could `SET ROLE pg_read_all_data` and
read a forbidden table. When the policy only reports undeclared reads, the role is granted
SELECT on every relation that is neither forbidden nor reaches a forbidden one.

An undeclared write is then refused by the server itself (SQLSTATE 42501), whatever path the
SQL takes: a trigger, a rule, a function, dynamic SQL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from rollproof.core.guard import SurfaceGuard, matches_any
from rollproof.core.policy import ReadMode
from rollproof.core.surface import AccessKind, ObjectType, StatementScope
from rollproof.engines.postgres.reach import DEPENDENTS, forbidden_reach, normalize

_RELATION_KIND = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
    "f": "FOREIGN TABLE",
}


@dataclass(slots=True)
class Grants:
    role: str
    owned: list[str] = field(default_factory=list)
    readable: list[str] = field(default_factory=list)
    create_in: list[str] = field(default_factory=list)
    reaching: dict[str, str] = field(default_factory=dict)
    """Objects that reach a forbidden object with another role's privileges -> that object."""

    def describe(self) -> str:
        out = (
            f"scripts run as role {self.role}: owns {', '.join(self.owned) or 'nothing'}; "
            f"may read {', '.join(self.readable) or 'nothing else'}; "
            f"may create in schema(s) {', '.join(self.create_in) or 'none'}"
        )
        if self.reaching:
            out += "; no privilege on " + ", ".join(
                f"{name} (reaches forbidden {root})" for name, root in sorted(self.reaching.items())
            )
        return out

    def reached_through(self, name: str) -> str | None:
        """The forbidden object `name` (as a server message names it) reaches, or None."""
        if name in self.reaching:
            return self.reaching[name]
        bare = [root for n, root in self.reaching.items() if n.rpartition(".")[2] == name]
        return bare[0] if len(bare) == 1 else None


_OBJECTS = """
SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       c.relkind, n.nspname, c.relname,
       -- a serial or identity sequence: its owner is its table's, never changed by itself
       c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
           WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
             AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
             AND d.deptype IN ('a', 'i'))
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
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN NOINHERIT PASSWORD {}").format(ident, sql.Literal(password))
    )
    grants = Grants(role)
    grants.reaching = forbidden_reach(conn, guard.forbidden)
    closed = (*guard.forbidden, *grants.reaching)

    def shut(name: str) -> bool:
        return matches_any(name, closed)

    writes = {n for n in (normalize(w) for w in guard.writes) if not shut(n)}
    reads = {normalize(n) for n in guard.reads} - writes
    reads = {n for n in reads if not shut(n)}
    read_all = guard.read_mode is ReadMode.REPORT
    declared = {normalize(n) for n in guard.coverage.declared}

    for (schema,) in conn.execute(_SCHEMAS).fetchall():
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
        )
    existing: set[str] = set()
    for name, relkind, schema, relname, linked in conn.execute(_OBJECTS).fetchall():
        target = sql.Identifier(schema, relname)
        kind = sql.SQL(_RELATION_KIND[relkind])
        on = sql.SQL("SEQUENCE" if relkind == "S" else "TABLE")
        existing.add(name)
        # A privilege PUBLIC holds would let an undeclared write through.
        conn.execute(sql.SQL("REVOKE ALL ON {} {} FROM PUBLIC").format(on, target))
        if shut(name):
            continue
        if name in writes and linked:
            # Its table's ownership carries it; declared by itself, it may be used and set.
            conn.execute(sql.SQL("GRANT ALL ON SEQUENCE {} TO {}").format(target, ident))
            grants.readable.append(name)
        elif name in writes:
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(kind, target, ident))
            grants.owned.append(name)
        elif name in reads or read_all:
            # Reads only reported: every relation that is neither forbidden nor reaches one.
            conn.execute(sql.SQL("GRANT SELECT ON {} {} TO {}").format(on, target, ident))
            if name in declared and relkind in ("r", "p"):
                # A foreign key to a table the change only reads (ADD CONSTRAINT ... REFERENCES)
                # needs REFERENCES on it, which reads nothing more and writes nothing. Only a
                # declared table: a parent read implicitly (an existing key's check) is not one
                # a new key may point at.
                conn.execute(sql.SQL("GRANT REFERENCES ON TABLE {} TO {}").format(target, ident))
            grants.readable.append(name)
    for name, signature, security_definer, prokind in conn.execute(_FUNCTIONS).fetchall():
        existing.add(name)
        what = sql.SQL("PROCEDURE" if prokind == "p" else "FUNCTION")
        if prokind != "a" and (security_definer or shut(name)):
            # A SECURITY DEFINER function runs with its owner's rights: it could write for us,
            # or read what we may not; a forbidden function is no one's to call.
            conn.execute(
                sql.SQL("REVOKE EXECUTE ON {} {} FROM PUBLIC").format(what, sql.SQL(signature))
            )
        if name in writes:
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(what, sql.SQL(signature), ident))
            grants.owned.append(f"{name}()")
    for name, schema, typname in conn.execute(_TYPES).fetchall():
        existing.add(name)
        if name in writes:
            conn.execute(
                sql.SQL("ALTER TYPE {} OWNER TO {}").format(sql.Identifier(schema, typname), ident)
            )
            grants.owned.append(name)
    _own_declared_schemas(conn, role, writes, existing, grants, shut)
    # An index or trigger belongs to its table: creating or dropping one needs the table's
    # ownership, so a declared index or trigger brings its table's ownership with it (never a
    # forbidden table's, nor that of a table that reaches one).
    for name, schema, relname in conn.execute(DEPENDENTS).fetchall():
        existing.add(name)
        table = f"{schema}.{relname}" if schema != "public" else relname
        if (
            name in writes
            and name not in grants.owned
            and table not in grants.owned
            and not shut(table)
        ):
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


def _own_declared_schemas(
    conn: psycopg.Connection[Any],
    role: str,
    writes: set[str],
    existing: set[str],
    grants: Grants,
    shut: Callable[[str], bool],
) -> None:
    """Hand the role each declared schema, so `ALTER SCHEMA s OWNER TO r` runs as it would for
    the schema's owner. A schema's owner may drop any object in it, so a schema holding a
    forbidden object (or one that reaches one) is never handed over: the server refuses."""
    for (schema,) in conn.execute(_SCHEMAS).fetchall():
        name = str(schema)
        if name not in writes:
            continue
        existing.add(name)

        def inside(obj: str, name: str = name) -> bool:
            return obj.startswith(f"{name}.") or (name == "public" and "." not in obj)

        if shut(name) or any(inside(n) and shut(n) for n in existing | set(grants.reaching)):
            continue
        conn.execute(
            sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(
                sql.Identifier(name), sql.Identifier(role)
            )
        )
        grants.owned.append(f"schema {name}")


@contextlib.contextmanager
def lend_read_all(admin: psycopg.Connection[Any], role: str) -> Iterator[None]:
    """`role` may `SET ROLE pg_read_all_data` inside this block only.

    For rollproof's own read inside the change's still-open transaction, after the script's
    last statement ran: membership is a catalog row the open transaction sees at its next
    statement. Outside this block the role belongs to no role, so no statement of a change can
    borrow another role's reads.
    """
    ident = sql.Identifier(role)
    admin.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(ident))
    try:
        yield
    finally:
        admin.execute(sql.SQL("REVOKE pg_read_all_data FROM {}").format(ident))


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


_READ_THROUGH = """
WITH RECURSIVE read_by(oid) AS (
    SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = ANY(
        SELECT pg_catalog.to_regclass(n) FROM pg_catalog.unnest(%(readers)s::text[]) AS n)
    UNION
    SELECT d.refobjid FROM read_by
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = read_by.oid AND r.rulename = '_RETURN'
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass
        AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass
)
SELECT EXISTS (SELECT 1 FROM read_by WHERE oid = pg_catalog.to_regclass(%(obj)s))
"""


def read_through_views(conn: psycopg.Connection[Any], readers: Iterable[str], obj: str) -> bool:
    """Whether `obj` is read by a view the statement reads (directly or through other views):
    a table a `security_invoker` view reads as the role was read, not written."""
    names = sorted(readers)
    if not names:
        return False
    row = conn.execute(_READ_THROUGH, {"readers": names, "obj": obj}).fetchone()
    return bool(row and row[0])


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


# -- the source cluster's roles on the scratch server ------------------------------------------

_SOURCE_ROLES = """
SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,
       rolconnlimit, rolvaliduntil::text
FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_' ORDER BY rolname
"""
_SOURCE_MEMBERSHIPS = """
SELECT r.rolname, m.rolname, am.admin_option
FROM pg_catalog.pg_auth_members am
JOIN pg_catalog.pg_roles r ON r.oid = am.roleid
JOIN pg_catalog.pg_roles m ON m.oid = am.member
WHERE m.rolname !~ '^pg_'
ORDER BY 2, 1
"""


def _role_options(row: tuple[Any, ...]) -> sql.Composable:
    _name, superuser, inherit, createrole, createdb, replication, bypassrls, limit, until = row
    words = [
        "NOLOGIN",
        "SUPERUSER" if superuser else "NOSUPERUSER",
        "INHERIT" if inherit else "NOINHERIT",
        "CREATEROLE" if createrole else "NOCREATEROLE",
        "CREATEDB" if createdb else "NOCREATEDB",
        "REPLICATION" if replication else "NOREPLICATION",
        "BYPASSRLS" if bypassrls else "NOBYPASSRLS",
    ]
    out: list[sql.Composable] = [sql.SQL(" ".join(words))]
    out.append(sql.SQL(" CONNECTION LIMIT {}").format(sql.Literal(int(limit))))
    if until is not None:
        out.append(sql.SQL(" VALID UNTIL {}").format(sql.Literal(str(until))))
    return sql.Composed(out)


def copy_roles(source: psycopg.Connection[Any], scratch: psycopg.Connection[Any]) -> str:
    """Create every role of the source cluster that the scratch server lacks; return a note.

    Names, attributes (superuser, inherit, createrole, createdb, replication, bypassrls,
    connection limit, validity) and memberships among them are copied, so a change can be
    rehearsed as production would run it: `ALTER ... OWNER TO role`, `GRANT ... TO role`,
    policies `TO role` all find their role. Never a password, and never LOGIN: nobody can log
    into the scratch server as a production role (rollproof's own sessions use the scratch
    login and the change role). A role the scratch server already has is left as it is, and
    memberships are added only to roles created here, so a shared scratch server's own roles
    gain nothing. Roles are cluster state: they are not part of any database's fingerprint.
    """
    existing = {str(r) for (r,) in scratch.execute("SELECT rolname FROM pg_catalog.pg_roles")}
    created: list[str] = []
    plain: list[str] = []
    failed: list[str] = []
    for row in source.execute(_SOURCE_ROLES).fetchall():
        name = str(row[0])
        if name in existing:
            continue
        ident = sql.Identifier(name)
        try:
            scratch.execute(sql.SQL("CREATE ROLE {} ").format(ident) + _role_options(tuple(row)))
            created.append(name)
        except psycopg.Error:
            # A scratch login with CREATEROLE but not SUPERUSER cannot give every attribute.
            try:
                scratch.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
                plain.append(name)
            except psycopg.Error:
                failed.append(name)
    made = set(created) | set(plain)
    members_failed: list[str] = []
    for role, member, admin_option in source.execute(_SOURCE_MEMBERSHIPS).fetchall():
        if str(member) not in made:
            continue
        grant = sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member))
        if admin_option:
            grant += sql.SQL(" WITH ADMIN OPTION")
        try:
            scratch.execute(grant)
        except psycopg.Error:
            members_failed.append(f"{member} in {role}")
    parts = []
    if created:
        parts.append(
            "roles created on the scratch server as NOLOGIN with the source's attributes and "
            f"memberships (never passwords): {', '.join(created)}"
        )
    if plain:
        parts.append(
            "roles created on the scratch server as NOLOGIN without their attributes (the "
            f"scratch login may not give them): {', '.join(plain)}"
        )
    if failed:
        parts.append(f"roles that could not be created on the scratch server: {', '.join(failed)}")
    if members_failed:
        parts.append(f"memberships that could not be copied: {', '.join(members_failed)}")
    return "; ".join(parts)
