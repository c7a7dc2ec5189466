"""`ALTER ... OWNER TO role` under run-time enforcement: membership lent for one statement.

The change role belongs to no role (roles.py), and PostgreSQL lets only a member of the new
owner give an object away (and the new owner must hold CREATE on the object's schema, or on the
database for a schema). So a statement that *only* changes an owner (`ALTER TABLE|SEQUENCE|VIEW|
MATERIALIZED VIEW|FOREIGN TABLE ... OWNER TO`, `ALTER FUNCTION|PROCEDURE|ROUTINE|AGGREGATE|TYPE|
DOMAIN|SCHEMA ... OWNER TO`, read with PostgreSQL's parser) on an object declared in `writes`
runs with, for that statement only:

* membership in the new owner (a role that exists on the scratch server: every role of the
  source cluster is copied there, NOLOGIN), and in the object's current owner when that is not
  the change role (with INHERIT, which ownership checks need);
* CREATE on the object's schema for the new owner, when it lacks it; for a schema, CREATE on
  the database for the change role (PostgreSQL checks the role running ALTER SCHEMA there);

all revoked right after the statement, so the schema's ACL is as before. The new owner is
refused, with the reason, when it (or any role it is a member of) can read a forbidden object
or one that reaches a forbidden object (`Grants.reaching`): membership in it would hand those
reads to the change. Giving an object back to the owner the change role stands in for (the
privilege mask shows the role's objects as their source owner's) is run as `OWNER TO
CURRENT_USER`: in the clone that owner *is* the change role, so nothing is lent but the current
owner's membership.

A later statement that alters a declared relation the change gave to a role vetted this way
(the revert's `DROP COLUMN` on a table given away by apply) gets that role's membership for
that statement too: in production it runs as a role that can; here without it the script would
fail before the fingerprint could say what was not restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast, enums
from pglast.stream import RawStream
from psycopg import sql

from rollproof.core.guard import matches_any
from rollproof.core.surface import AccessKind
from rollproof.engines.postgres.reach import normalize

_RELATIONS = {
    enums.ObjectType.OBJECT_TABLE: "table",
    enums.ObjectType.OBJECT_SEQUENCE: "sequence",
    enums.ObjectType.OBJECT_VIEW: "view",
    enums.ObjectType.OBJECT_MATVIEW: "materialized view",
    enums.ObjectType.OBJECT_FOREIGN_TABLE: "foreign table",
}
_OTHERS = {
    enums.ObjectType.OBJECT_FUNCTION: "function",
    enums.ObjectType.OBJECT_PROCEDURE: "procedure",
    enums.ObjectType.OBJECT_ROUTINE: "routine",
    enums.ObjectType.OBJECT_AGGREGATE: "aggregate",
    enums.ObjectType.OBJECT_TYPE: "type",
    enums.ObjectType.OBJECT_DOMAIN: "domain",
    enums.ObjectType.OBJECT_SCHEMA: "schema",
}
_SELF = (
    enums.RoleSpecType.ROLESPEC_CURRENT_USER,
    enums.RoleSpecType.ROLESPEC_SESSION_USER,
    getattr(enums.RoleSpecType, "ROLESPEC_CURRENT_ROLE", enums.RoleSpecType.ROLESPEC_CURRENT_USER),
)


class OwnerRefusedError(Exception):
    """An OWNER TO rollproof will not rehearse (the message says why)."""


@dataclass(frozen=True, slots=True)
class OwnerChange:
    """A statement that only changes one object's owner."""

    kind: str
    names: tuple[str, ...]
    args: tuple[str, ...] | None
    target: str | None
    """The new owner's name; None for CURRENT_USER / SESSION_USER / CURRENT_ROLE."""
    node: ast.Node


def owner_change(node: ast.Node | None) -> OwnerChange | None:
    """The owner change `node` is, when it is nothing else."""
    if isinstance(node, ast.AlterTableStmt):
        cmds = node.cmds or ()
        kind = None if node.objtype is None else _RELATIONS.get(node.objtype)
        rel = node.relation
        if (
            kind is None
            or rel is None
            or len(cmds) != 1
            or not isinstance(cmds[0], ast.AlterTableCmd)
            or cmds[0].subtype is not enums.AlterTableType.AT_ChangeOwner
        ):
            return None
        names = tuple(str(n) for n in (rel.catalogname, rel.schemaname, rel.relname) if n)
        return OwnerChange(kind, names, None, _role_name(cmds[0].newowner), node)
    if isinstance(node, ast.AlterOwnerStmt):
        kind = None if node.objectType is None else _OTHERS.get(node.objectType)
        if kind is None:
            return None
        obj = node.object
        args: tuple[str, ...] | None = None
        if isinstance(obj, ast.ObjectWithArgs):
            if obj.args_unspecified:
                return None
            names = tuple(str(s.sval) for s in obj.objname or ())
            args = tuple(RawStream()(a) for a in obj.objargs or ())
        elif isinstance(obj, ast.String):
            names = (str(obj.sval),)
        elif isinstance(obj, tuple) and all(isinstance(s, ast.String) for s in obj):
            names = tuple(str(s.sval) for s in obj)
        else:
            return None
        return OwnerChange(kind, names, args, _role_name(node.newowner), node)
    return None


def _role_name(spec: Any) -> str | None:
    if isinstance(spec, ast.RoleSpec) and spec.roletype in _SELF:
        return None
    if isinstance(spec, ast.RoleSpec) and spec.roletype is enums.RoleSpecType.ROLESPEC_CSTRING:
        return str(spec.rolename)
    return "PUBLIC"  # OWNER TO PUBLIC is refused by the server itself


def to_current_user(change: OwnerChange) -> str:
    """The statement with `OWNER TO CURRENT_USER`."""
    me = ast.RoleSpec(roletype=enums.RoleSpecType.ROLESPEC_CURRENT_USER)
    node: Any = change.node
    if isinstance(node, ast.AlterTableStmt):
        cmd: Any = (node.cmds or ())[0]
        node = ast.AlterTableStmt(
            relation=node.relation,
            cmds=(ast.AlterTableCmd(subtype=cmd.subtype, newowner=me, behavior=cmd.behavior),),
            objtype=node.objtype,
            missing_ok=node.missing_ok,
        )
    else:
        node = ast.AlterOwnerStmt(objectType=node.objectType, object=node.object, newowner=me)
    return str(RawStream()(node))


@dataclass(frozen=True, slots=True)
class Target:
    """The object an owner change names, as the clone's catalog has it now."""

    ident: str
    """Catalog identity as the fingerprint keys it (`pg_class:16390`)."""
    name: str
    """As declared: schema-qualified unless in public."""
    owner: str
    schema: str | None


_TARGET = {
    "pg_class": """SELECT c.relname, n.nspname, pg_catalog.pg_get_userbyid(c.relowner)
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = %s""",
    "pg_proc": """SELECT p.proname, n.nspname, pg_catalog.pg_get_userbyid(p.proowner)
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE p.oid = %s""",
    "pg_type": """SELECT t.typname, n.nspname, pg_catalog.pg_get_userbyid(t.typowner)
        FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        WHERE t.oid = %s""",
    "pg_namespace": """SELECT n.nspname, NULL, pg_catalog.pg_get_userbyid(n.nspowner)
        FROM pg_catalog.pg_namespace n WHERE n.oid = %s""",
}


def resolve(conn: psycopg.Connection[Any], change: OwnerChange) -> Target | None:
    """What `change` names, read on the change's own connection (it sees the script's own
    uncommitted objects) under a savepoint when a transaction is open; None when unreadable."""
    quoted = sql.Identifier(*change.names).as_string(conn)
    if change.kind in _RELATIONS.values():
        query, catalog = "SELECT pg_catalog.to_regclass(%s)::oid", "pg_class"
    elif change.kind in ("type", "domain"):
        query, catalog = "SELECT pg_catalog.to_regtype(%s)::oid", "pg_type"
    elif change.kind == "schema":
        query, catalog = "SELECT pg_catalog.to_regnamespace(%s)::oid", "pg_namespace"
    else:
        quoted += "(" + ", ".join(change.args or ()) + ")"
        query, catalog = "SELECT pg_catalog.to_regprocedure(%s)::oid", "pg_proc"
    row = _read(conn, query, (quoted,))
    if row is None or row[0] is None:
        return None
    catalog_query = _TARGET[catalog]
    described = _read(conn, catalog_query, (int(row[0]),))
    if described is None:
        return None
    name, schema, owner = str(described[0]), described[1], str(described[2])
    if schema is not None and schema != "public":
        name = f"{schema}.{name}"
    return Target(f"{catalog}:{int(row[0])}", name, owner, None if schema is None else str(schema))


def _read(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> Any:
    """One catalog row read on the change's connection without disturbing it: in a savepoint
    when a transaction is open, not at all when it is aborted; None on any error."""
    status = conn.info.transaction_status
    if status == psycopg.pq.TransactionStatus.INERROR:
        return None
    try:
        if status == psycopg.pq.TransactionStatus.INTRANS:
            with conn.transaction():
                return conn.execute(query, params).fetchone()
        return conn.execute(query, params).fetchone()
    except psycopg.Error:
        return None


_READABLE = """
WITH who AS (
    SELECT r.oid FROM pg_catalog.pg_roles r
    WHERE pg_catalog.pg_has_role(%(role)s, r.oid, 'MEMBER'))
SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
AND EXISTS (SELECT 1 FROM who
            WHERE pg_catalog.has_any_column_privilege(who.oid, c.oid, 'SELECT'))
UNION ALL
SELECT CASE WHEN n.nspname = 'public' THEN p.proname ELSE n.nspname || '.' || p.proname END
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
AND EXISTS (SELECT 1 FROM who WHERE pg_catalog.has_function_privilege(who.oid, p.oid, 'EXECUTE'))
"""


def forbidden_readable(
    admin: psycopg.Connection[Any], role: str, closed: Iterable[str]
) -> list[str]:
    """The forbidden objects (and objects reaching one) `role`, or a role it may become, can
    read or run."""
    closed = tuple(closed)
    if not closed:
        return []
    names = {str(n) for (n,) in admin.execute(_READABLE, {"role": role}).fetchall()}
    return sorted(n for n in names if matches_any(normalize(n), closed))


_IN_SCHEMA = """
SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid = %(oid)s
UNION ALL
SELECT CASE WHEN n.nspname = 'public' THEN p.proname ELSE n.nspname || '.' || p.proname END
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.oid = %(oid)s
UNION ALL
SELECT CASE WHEN n.nspname = 'public' THEN t.typname ELSE n.nspname || '.' || t.typname END
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE n.oid = %(oid)s
"""


def forbidden_in_schema(
    admin: psycopg.Connection[Any], ident: str, closed: Iterable[str]
) -> list[str]:
    """The forbidden objects (and objects reaching one) in the schema `ident`
    (`pg_namespace:oid`): why roles.grant_declared did not give the change role that schema."""
    closed = tuple(closed)
    if not closed:
        return []
    oid = int(ident.rpartition(":")[2])
    names = {str(n) for (n,) in admin.execute(_IN_SCHEMA, {"oid": oid}).fetchall()}
    return sorted(n for n in names if matches_any(normalize(n), closed))


def role_exists(admin: psycopg.Connection[Any], role: str) -> bool:
    row = admin.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone()
    return row is not None


@dataclass(slots=True)
class Loan:
    """What is lent for one statement; `lend` gives it and takes it back."""

    members: list[str] = field(default_factory=list)
    inherit: bool = False
    schema_create: list[tuple[str, str]] = field(default_factory=list)
    """(schema, role) pairs granted CREATE for the statement."""
    database_create: str | None = None

    def __bool__(self) -> bool:
        return bool(self.members or self.schema_create or self.database_create)


@contextlib.contextmanager
def lend(admin: psycopg.Connection[Any], role: str, loan: Loan) -> Iterator[None]:
    """Give `role` the loan (on `admin`, autocommit, the clone's database), then take it back."""
    me = sql.Identifier(role)
    undo: list[sql.Composed] = []
    try:
        for member in loan.members:
            admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member), me))
            undo.append(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(member), me))
        if loan.inherit:
            admin.execute(sql.SQL("ALTER ROLE {} INHERIT").format(me))
            undo.append(sql.SQL("ALTER ROLE {} NOINHERIT").format(me))
        for schema, who in loan.schema_create:
            admin.execute(
                sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(
                    sql.Identifier(schema), sql.Identifier(who)
                )
            )
            undo.append(
                sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(
                    sql.Identifier(schema), sql.Identifier(who)
                )
            )
        if loan.database_create is not None:
            db = sql.Identifier(str(admin.info.dbname))
            grantee = sql.Identifier(loan.database_create)
            admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(db, grantee))
            undo.append(sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(db, grantee))
        yield
    finally:
        for statement in reversed(undo):
            admin.execute(statement)


def _needs_create(admin: psycopg.Connection[Any], who: str, target: Target) -> Loan:
    loan = Loan()
    if target.schema is not None:
        row = admin.execute(
            "SELECT pg_catalog.has_schema_privilege(%s, %s, 'CREATE')", (who, target.schema)
        ).fetchone()
        if row is not None and not row[0]:
            loan.schema_create.append((target.schema, who))
    else:
        row = admin.execute(
            "SELECT pg_catalog.has_database_privilege(%s, current_database(), 'CREATE')", (who,)
        ).fetchone()
        if row is not None and not row[0]:
            loan.database_create = who
    return loan


def _member(admin: psycopg.Connection[Any], role: str, of: str) -> bool:
    row = admin.execute("SELECT pg_catalog.pg_has_role(%s, %s, 'MEMBER')", (role, of)).fetchone()
    return bool(row and row[0])


@dataclass(slots=True)
class Lender:
    """Decides, for one statement of a change, what is lent to the change role."""

    role: str
    writes: tuple[str, ...]
    closed: Callable[[], tuple[str, ...]]
    """Forbidden objects and those reaching one."""
    original_owner: Callable[[str], str | None]
    """The source owner the change role stands in for on an object (the privilege mask)."""
    vetted: set[str] = field(default_factory=set)
    """Roles the change gave a declared object to in this clone (checked like a new owner)."""

    def plan(
        self,
        conn: psycopg.Connection[Any],
        admin: psycopg.Connection[Any],
        statement: str,
        node: ast.Node | None,
        accesses: Iterable[tuple[str, AccessKind]],
    ) -> tuple[str, Loan]:
        """The statement to run and what to lend for it; OwnerRefusedError when refused."""
        change = owner_change(node)
        if change is None:
            return statement, self._given_away(conn, admin, accesses)
        target = resolve(conn, change)
        if target is None or not self._declared(target.name):
            return statement, Loan()  # the server decides, and the guard reports a denial
        if change.kind == "schema" and target.owner != self.role:
            held = forbidden_in_schema(admin, target.ident, self.closed())
            if held:
                raise OwnerRefusedError(
                    f"ALTER SCHEMA {target.name} OWNER TO {change.target or 'CURRENT_USER'} "
                    f"is not rehearsed: the schema holds forbidden object(s) {', '.join(held)}, "
                    "and a schema's owner may drop anything in it, so the change role is not "
                    "given the schema"
                )
        new = change.target
        if new is not None and new == self.original_owner(target.ident):
            # Back to the owner the change role stands for in the clone: that owner is us.
            statement, new = to_current_user(change), None
        new_owner = self.role if new is None else new
        loan = Loan()
        if new is not None and new != "PUBLIC" and role_exists(admin, new):
            reach = forbidden_readable(admin, new, self.closed())
            if reach:
                raise OwnerRefusedError(
                    f"OWNER TO {new} is not rehearsed: role {new} can read forbidden "
                    f"object(s) {', '.join(reach)}, and the change role would have to be "
                    "lent membership in it for the statement"
                )
            if not _member(admin, self.role, new):
                loan.members.append(new)
            # A schema's new owner needs nothing: PostgreSQL checks CREATE on the database
            # for the role running ALTER SCHEMA ... OWNER TO, not for the new owner.
            created = _needs_create(admin, self.role if target.schema is None else new, target)
            loan.schema_create, loan.database_create = (
                created.schema_create,
                created.database_create,
            )
        elif new is None:
            created = _needs_create(admin, new_owner, target)
            loan.schema_create, loan.database_create = (
                created.schema_create,
                created.database_create,
            )
        if target.owner != self.role:
            if not self._lendable(admin, target.owner):
                return statement, Loan()
            if target.owner not in loan.members and not _member(admin, self.role, target.owner):
                loan.members.append(target.owner)
            loan.inherit = True
        if new is not None and new != "PUBLIC":
            self.vetted.add(new)
        return statement, loan

    def _declared(self, name: str) -> bool:
        name = normalize(name)
        writes = tuple(normalize(w) for w in self.writes)
        return matches_any(name, writes) and not matches_any(name, self.closed())

    def _lendable(self, admin: psycopg.Connection[Any], owner: str) -> bool:
        return owner in self.vetted and not forbidden_readable(admin, owner, self.closed())

    def _given_away(
        self,
        conn: psycopg.Connection[Any],
        admin: psycopg.Connection[Any],
        accesses: Iterable[tuple[str, AccessKind]],
    ) -> Loan:
        """Membership in the vetted role a declared relation was given to, for a statement
        that alters it."""
        loan = Loan()
        if not self.vetted:
            return loan
        for name, kind in accesses:
            if kind is AccessKind.READ or not self._declared(name):
                continue
            row = _read(
                conn,
                "SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c "
                "WHERE c.oid = pg_catalog.to_regclass(%s)",
                (name,),
            )
            if row is None:
                continue
            owner = str(row[0])
            if owner == self.role or owner in loan.members or not self._lendable(admin, owner):
                continue
            if not _member(admin, self.role, owner):
                loan.members.append(owner)
            loan.inherit = True
        return loan
