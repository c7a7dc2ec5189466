"""The PostgreSQL completeness matrix: every persistent attribute a revert can forget is seen.

Generated from one data table of the documented ALTER / GRANT / COMMENT / SECURITY LABEL forms
(docs/fingerprint.md, "PostgreSQL: what the fingerprint reads"). For each row, two rehearsals:

* apply sets the attribute and makes one real change (ADD COLUMN), revert forgets it (drops
  only the column): the revert leg FAILS, and the difference names the attribute;
* revert restores it too: the revert leg PASSES, and so does the transaction leg.

Plus changes that only GRANT, only COMMENT or only change an owner: they count as mutation
(no "apply changed nothing") and an honest revert PASSES.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rollproof.core.model import LegName, Verdict
from rollproof.engines.postgres.source import fingerprint_source
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.flow import rehearse as _rehearse
from rollproof.rehearse.report import report_json
from tests.conftest import assert_valid_report
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    admin,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)

BASE = """
CREATE TABLE customer (id integer PRIMARY KEY, name text, status text);
INSERT INTO customer SELECT i, 'name ' || i, 'open' FROM generate_series(1, 20) AS i;
CREATE INDEX customer_name ON customer (name);
ALTER TABLE customer ADD CONSTRAINT customer_positive CHECK (id > 0) NOT VALID;
CREATE POLICY customer_open ON customer USING (status = 'open');
CREATE SEQUENCE counter;
SELECT nextval('counter');
CREATE FUNCTION answer() RETURNS integer LANGUAGE sql AS 'SELECT 42';
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE VIEW customer_names AS SELECT id, name FROM customer;
"""
WRITES = '["customer", "customer_name", "counter", "answer", "mood", "customer_names"]'


@dataclass(frozen=True)
class Attr:
    """One documented form: the statement that sets it, the one that restores it, and the
    attribute the difference must name."""

    id: str
    set_sql: str
    restore_sql: str
    attribute: str
    setup: str = ""


# The data table the matrix is generated from. {r} is a role of the source cluster.
ATTRIBUTES: tuple[Attr, ...] = (
    Attr(
        "grant-table",
        "GRANT UPDATE ON customer TO {r}",
        "REVOKE UPDATE ON customer FROM {r}",
        "privilege",
    ),
    Attr(
        "grant-table-grant-option",
        "GRANT SELECT ON customer TO {r} WITH GRANT OPTION",
        "REVOKE SELECT ON customer FROM {r}",
        "privilege",
    ),
    Attr(
        "grant-column",
        "GRANT UPDATE (name) ON customer TO {r}",
        "REVOKE UPDATE (name) ON customer FROM {r}",
        "privilege",
    ),
    Attr(
        "grant-sequence",
        "GRANT USAGE ON SEQUENCE counter TO {r}",
        "REVOKE USAGE ON SEQUENCE counter FROM {r}",
        "privilege",
    ),
    Attr(
        "revoke-function-public",
        "REVOKE EXECUTE ON FUNCTION answer() FROM PUBLIC",
        "GRANT EXECUTE ON FUNCTION answer() TO PUBLIC",
        "privilege",
    ),
    Attr(
        "grant-function",
        "GRANT EXECUTE ON FUNCTION answer() TO {r}",
        "REVOKE EXECUTE ON FUNCTION answer() FROM {r}",
        "privilege",
    ),
    Attr(
        "revoke-type-public",
        "REVOKE USAGE ON TYPE mood FROM PUBLIC",
        "GRANT USAGE ON TYPE mood TO PUBLIC",
        "privilege",
    ),
    Attr(
        "grant-view",
        "GRANT SELECT ON customer_names TO {r}",
        "REVOKE SELECT ON customer_names FROM {r}",
        "privilege",
    ),
    Attr(
        "default-privileges",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {r}",
        "ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM {r}",
        "existence",
    ),
    Attr(
        "comment-table",
        "COMMENT ON TABLE customer IS 'who buys'",
        "COMMENT ON TABLE customer IS NULL",
        "comment",
    ),
    Attr(
        "comment-column",
        "COMMENT ON COLUMN customer.name IS 'full name'",
        "COMMENT ON COLUMN customer.name IS NULL",
        "comment",
    ),
    Attr(
        "comment-index",
        "COMMENT ON INDEX customer_name IS 'lookup'",
        "COMMENT ON INDEX customer_name IS NULL",
        "comment",
    ),
    Attr(
        "comment-constraint",
        "COMMENT ON CONSTRAINT customer_positive ON customer IS 'ids start at 1'",
        "COMMENT ON CONSTRAINT customer_positive ON customer IS NULL",
        "comment",
    ),
    Attr(
        "comment-policy",
        "COMMENT ON POLICY customer_open ON customer IS 'open only'",
        "COMMENT ON POLICY customer_open ON customer IS NULL",
        "comment",
    ),
    Attr(
        "comment-sequence",
        "COMMENT ON SEQUENCE counter IS 'tickets'",
        "COMMENT ON SEQUENCE counter IS NULL",
        "comment",
    ),
    Attr(
        "comment-function",
        "COMMENT ON FUNCTION answer() IS 'the answer'",
        "COMMENT ON FUNCTION answer() IS NULL",
        "comment",
    ),
    Attr(
        "comment-type",
        "COMMENT ON TYPE mood IS 'feelings'",
        "COMMENT ON TYPE mood IS NULL",
        "comment",
    ),
    Attr(
        "comment-view",
        "COMMENT ON VIEW customer_names IS 'names'",
        "COMMENT ON VIEW customer_names IS NULL",
        "comment",
    ),
    Attr(
        "replica-identity",
        "ALTER TABLE customer REPLICA IDENTITY FULL",
        "ALTER TABLE customer REPLICA IDENTITY DEFAULT",
        "replica_identity",
    ),
    Attr(
        "replica-identity-index",
        "ALTER TABLE customer REPLICA IDENTITY USING INDEX customer_pkey",
        "ALTER TABLE customer REPLICA IDENTITY DEFAULT",
        "replica_identity",
    ),
    Attr(
        "storage",
        "ALTER TABLE customer ALTER COLUMN name SET STORAGE EXTERNAL",
        "ALTER TABLE customer ALTER COLUMN name SET STORAGE EXTENDED",
        "storage",
    ),
    Attr(
        "compression",
        "ALTER TABLE customer ALTER COLUMN name SET COMPRESSION pglz",
        "ALTER TABLE customer ALTER COLUMN name SET COMPRESSION DEFAULT",
        "compression",
    ),
    Attr(
        "cluster-on",
        "ALTER TABLE customer CLUSTER ON customer_name",
        "ALTER TABLE customer SET WITHOUT CLUSTER",
        "clustered",
    ),
    Attr(
        "statistics-target",
        "ALTER TABLE customer ALTER COLUMN name SET STATISTICS 500",
        "ALTER TABLE customer ALTER COLUMN name SET STATISTICS -1",
        "statistics",
    ),
    Attr(
        "column-options",
        "ALTER TABLE customer ALTER COLUMN name SET (n_distinct = 5)",
        "ALTER TABLE customer ALTER COLUMN name RESET (n_distinct)",
        "options",
    ),
    Attr(
        "table-options",
        "ALTER TABLE customer SET (fillfactor = 70)",
        "ALTER TABLE customer RESET (fillfactor)",
        "options",
    ),
    Attr(
        "index-options",
        "ALTER INDEX customer_name SET (fillfactor = 70)",
        "ALTER INDEX customer_name RESET (fillfactor)",
        "options",
    ),
    Attr(
        "unlogged",
        "ALTER TABLE customer SET UNLOGGED",
        "ALTER TABLE customer SET LOGGED",
        "persistence",
    ),
    Attr(
        "force-rls",
        "ALTER TABLE customer FORCE ROW LEVEL SECURITY",
        "ALTER TABLE customer NO FORCE ROW LEVEL SECURITY",
        "row_security",
    ),
    Attr(
        "validate-constraint",
        "ALTER TABLE customer VALIDATE CONSTRAINT customer_positive",
        "ALTER TABLE customer DROP CONSTRAINT customer_positive; "
        "ALTER TABLE customer ADD CONSTRAINT customer_positive CHECK (id > 0) NOT VALID",
        "validated",
    ),
    Attr(
        "policy-roles",
        "ALTER POLICY customer_open ON customer TO {r}",
        "ALTER POLICY customer_open ON customer TO PUBLIC",
        "roles",
    ),
    Attr(
        "sequence-increment",
        "ALTER SEQUENCE counter INCREMENT BY 5",
        "ALTER SEQUENCE counter INCREMENT BY 1",
        "increment",
    ),
    Attr(
        "function-security-definer",
        "ALTER FUNCTION answer() SECURITY DEFINER",
        "ALTER FUNCTION answer() SECURITY INVOKER",
        "definition",
    ),
    Attr(
        "view-option",
        "ALTER VIEW customer_names SET (security_barrier = true)",
        "ALTER VIEW customer_names RESET (security_barrier)",
        "options",
    ),
    Attr(
        "owner-table",
        "ALTER TABLE customer OWNER TO {r}",
        "ALTER TABLE customer OWNER TO {owner}",
        "owner",
    ),
    Attr(
        "owner-function",
        "ALTER FUNCTION answer() OWNER TO {r}",
        "ALTER FUNCTION answer() OWNER TO {owner}",
        "owner",
    ),
    Attr("owner-type", "ALTER TYPE mood OWNER TO {r}", "ALTER TYPE mood OWNER TO {owner}", "owner"),
    Attr(
        "security-label",
        "SECURITY LABEL ON TABLE customer IS 'secret'",
        "SECURITY LABEL ON TABLE customer IS NULL",
        "labels",
    ),
)


@pytest.fixture(name="grantee", scope="module")
def grantee_fixture(pg_servers: Servers) -> Iterator[str]:
    """A role of the source cluster that holds nothing in the source database."""
    role = f"rp_reporting_{secrets.token_hex(3)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    yield role
    for server in (pg_servers.source, pg_servers.scratch):
        with admin(server) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _label_provider(dsn: str) -> bool:
    with admin(dsn) as conn:
        try:
            conn.execute("SECURITY LABEL ON ROLE postgres IS NULL")
        except psycopg.Error:
            return False
    return True


def rehearse(*args: Any, **kwargs: Any) -> RehearsalResult:
    result = _rehearse(*args, **kwargs)
    assert_valid_report(report_json(result))
    return result


def _owner(dsn: str) -> str:
    with admin(dsn) as conn:
        row = conn.execute(
            "SELECT relowner::regrole::text FROM pg_class WHERE relname = 'customer'"
        )
        found = row.fetchone()
    assert found is not None
    return str(found[0])


def _statements(text: str, role: str, owner: str) -> str:
    return "".join(f"{s.strip()};\n" for s in text.format(r=role, owner=owner).split(";"))


def _attribute_named(result: RehearsalResult, attribute: str) -> str:
    revert = next(x for x in result.legs if x.name == LegName.REVERT)
    named = [
        a
        for d in revert.differences
        for a in d.detail.get("attributes", [])
        if a["attribute"] == attribute
    ]
    assert named, (attribute, [(d.summary, d.detail) for d in revert.differences])
    return revert.reason or ""


@pytest.mark.parametrize("attr", ATTRIBUTES, ids=[a.id for a in ATTRIBUTES])
@pytest.mark.parametrize("revert_restores", [False, True], ids=["forgotten", "restored"])
def test_a_revert_that_forgets_an_attribute_fails(
    attr: Attr,
    revert_restores: bool,
    grantee: str,
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
) -> None:
    if attr.attribute == "labels" and not _label_provider(pg_servers.scratch):
        pytest.skip("no security label provider is loaded on the scratch server")
    dsn = pg_source(BASE + attr.setup)
    owner = _owner(dsn)
    apply = _statements(attr.set_sql, grantee, owner)
    apply = "ALTER TABLE customer ADD COLUMN extra integer;\n" + apply
    revert = "ALTER TABLE customer DROP COLUMN extra;\n"
    if revert_restores:
        revert = _statements(attr.restore_sql, grantee, owner) + revert
    change = make_pg_change(apply, revert, surfaces=f"writes = {WRITES}\n")
    legs = [LegName.TRANSACTION, LegName.REVERT] if revert_restores else [LegName.REVERT]
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=legs)
    check = next(c for c in result.isolation.checks if c.name == "clone-matches-source")
    assert check.holds is True, check.evidence
    verdicts = {str(x.name): x.verdict for x in result.legs}
    if revert_restores:
        assert set(verdicts.values()) == {Verdict.PASS}, [
            (x.name, x.verdict, x.reason) for x in result.legs
        ]
    else:
        assert verdicts == {"revert": Verdict.FAIL}, [(x.name, x.reason) for x in result.legs]
        reason = _attribute_named(result, attr.attribute)
        assert "apply changed nothing" not in reason


ONLY: tuple[tuple[str, str, str], ...] = (
    ("grant-only", "GRANT SELECT ON customer TO {r}", "REVOKE SELECT ON customer FROM {r}"),
    (
        "column-grant-only",
        "GRANT UPDATE (status) ON customer TO {r}",
        "REVOKE UPDATE (status) ON customer FROM {r}",
    ),
    (
        "comment-only",
        "COMMENT ON TABLE customer IS 'who buys'",
        "COMMENT ON TABLE customer IS NULL",
    ),
    ("owner-only", "ALTER TABLE customer OWNER TO {r}", "ALTER TABLE customer OWNER TO {owner}"),
)


@pytest.mark.parametrize(("apply", "revert"), [o[1:] for o in ONLY], ids=[o[0] for o in ONLY])
def test_a_privilege_or_comment_only_change_is_a_change(
    apply: str,
    revert: str,
    grantee: str,
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
) -> None:
    dsn = pg_source(BASE)
    owner = _owner(dsn)
    change = make_pg_change(
        _statements(apply, grantee, owner),
        _statements(revert, grantee, owner),
        surfaces=f"writes = {WRITES}\n",
    )
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=[LegName.TRANSACTION, LegName.REVERT]
    )
    assert {x.verdict for x in result.legs} == {Verdict.PASS}, [
        (x.name, x.verdict, x.reason) for x in result.legs
    ]
    forgotten = make_pg_change(
        _statements(apply, grantee, owner), "SELECT 1;\n", surfaces=f"writes = {WRITES}\n"
    )
    result = rehearse(forgotten, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    revert_leg = result.legs[0]
    assert revert_leg.verdict is Verdict.FAIL
    assert "apply changed nothing" not in (revert_leg.reason or "")


def test_the_difference_reads_as_an_action(
    grantee: str, pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(BASE)
    change = make_pg_change(
        f"ALTER TABLE customer ADD COLUMN extra integer;\nGRANT UPDATE ON customer TO {grantee};\n"
        "ALTER INDEX customer_name SET (fillfactor = 70);\n",
        "ALTER TABLE customer DROP COLUMN extra;\n",
        surfaces=f"writes = {WRITES}\n",
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    summaries = " | ".join(d.summary for d in result.legs[0].differences)
    assert summaries, result.legs[0].reason
    assert f"table customer: GRANT UPDATE TO {grantee} not revoked" in summaries, summaries
    assert 'index customer_name: options None -> ["fillfactor=70"]' in summaries, summaries


# Direct fingerprint coverage of kinds a scratch role cannot reach under enforcement: (set,
# restore, the schema object whose digest must change). Run as the superuser on a database of
# the source server: set changes that object's digest, restore gives the first fingerprint back.
DIRECT: tuple[tuple[str, str, str, str], ...] = (
    (
        "owner-table",
        "ALTER TABLE customer OWNER TO {r}",
        "ALTER TABLE customer OWNER TO {owner}",
        "table:customer",
    ),
    (
        "owner-function",
        "ALTER FUNCTION answer() OWNER TO {r}",
        "ALTER FUNCTION answer() OWNER TO {owner}",
        "function:answer",
    ),
    (
        "owner-schema",
        "CREATE SCHEMA side; ALTER SCHEMA side OWNER TO {r}",
        "ALTER SCHEMA side OWNER TO {owner}",
        "schema:side",
    ),
    (
        "grant-schema",
        "GRANT CREATE ON SCHEMA public TO {r}",
        "REVOKE CREATE ON SCHEMA public FROM {r}",
        "schema:public",
    ),
    (
        "comment-schema",
        "COMMENT ON SCHEMA public IS 'mine'",
        "COMMENT ON SCHEMA public IS 'standard public schema'",
        "schema:public",
    ),
    (
        "statistics-object",
        "ALTER STATISTICS customer_stats SET STATISTICS 50",
        "ALTER STATISTICS customer_stats SET STATISTICS -1",
        "statistics_object:public.customer_stats",
    ),
    (
        "large-object-comment",
        "COMMENT ON LARGE OBJECT 4242 IS 'blob'",
        "COMMENT ON LARGE OBJECT 4242 IS NULL",
        "large_object:4242",
    ),
    (
        "large-object-grant",
        "GRANT SELECT ON LARGE OBJECT 4242 TO {r}",
        "REVOKE SELECT ON LARGE OBJECT 4242 FROM {r}",
        "large_object:4242",
    ),
    (
        "publication-member",
        "ALTER PUBLICATION pub ADD TABLE customer",
        "ALTER PUBLICATION pub DROP TABLE customer",
        "publication:pub",
    ),
    (
        "event-trigger-disable",
        "ALTER EVENT TRIGGER watch DISABLE",
        "ALTER EVENT TRIGGER watch ENABLE",
        "event_trigger:watch",
    ),
    (
        "collation-comment",
        "COMMENT ON COLLATION posix_copy IS 'c'",
        "COMMENT ON COLLATION posix_copy IS NULL",
        "collation:public.posix_copy",
    ),
)
DIRECT_SETUP = """
CREATE STATISTICS customer_stats ON id, name FROM customer;
SELECT lo_create(4242);
CREATE PUBLICATION pub;
CREATE FUNCTION watch_fn() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER watch ON ddl_command_end EXECUTE FUNCTION watch_fn();
CREATE COLLATION posix_copy FROM "POSIX";
"""


@pytest.mark.parametrize(
    ("set_sql", "restore_sql", "key"), [d[1:] for d in DIRECT], ids=[d[0] for d in DIRECT]
)
def test_the_fingerprint_reads_it(
    set_sql: str, restore_sql: str, key: str, grantee: str, pg_servers: Servers
) -> None:
    name = f"rp_direct_{secrets.token_hex(4)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = pg_servers.source_db(name)
    try:
        with admin(dsn) as conn, warnings_ignored(conn):
            conn.execute((BASE + DIRECT_SETUP).encode())
        owner = _owner(dsn)
        first = fingerprint_source(dsn)
        assert key in first.schema_objects or key.startswith("schema:side"), sorted(
            first.schema_objects
        )
        with admin(dsn) as conn:
            conn.execute(_statements(set_sql, grantee, owner).encode())
        changed = fingerprint_source(dsn)
        assert changed.schema_objects.get(key) != first.schema_objects.get(key), key
        assert changed.digest != first.digest
        with admin(dsn) as conn:
            conn.execute(_statements(restore_sql, grantee, owner).encode())
            if key == "schema:side":
                conn.execute("DROP SCHEMA side")
        assert fingerprint_source(dsn).digest == first.digest
    finally:
        with admin(pg_servers.source) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def warnings_ignored(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """CREATE PUBLICATION warns when wal_level is not logical; the warning is not the test's."""
    conn.add_notice_handler(lambda _diag: None)
    yield
