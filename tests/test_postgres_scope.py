"""PostgreSQL SQL read with PostgreSQL's own parser: splitting, static scope, lint, transactions.

Pure: no server. The dialect name is "postgresql" (the sqlglot reader keeps "postgres").
"""

from __future__ import annotations

import pytest

from rollproof.core.sqltext import without_leading_comments
from rollproof.core.surface import POSTGRESQL, Access, AccessKind, ObjectType, RiskCode
from rollproof.engines.postgres.sql import (
    manages_transaction,
    not_in_transaction,
    parse_one,
    split_postgres,
)
from rollproof.surfaces.static import lint_destructive, static_scope, undeclared

TABLE, VIEW, INDEX, TRIGGER, UNKNOWN = (
    ObjectType.TABLE,
    ObjectType.VIEW,
    ObjectType.INDEX,
    ObjectType.TRIGGER,
    ObjectType.UNKNOWN,
)


def acc(name: str, kind: str, otype: ObjectType = UNKNOWN) -> Access:
    return Access(name, AccessKind(kind), otype)


def scope_of(sql: str) -> tuple[tuple[Access, ...], str | None]:
    [scope] = static_scope(sql, dialect=POSTGRESQL)
    return scope.accesses, scope.unknown


def test_splitting_respects_strings_dollar_quotes_rules_and_atomic_bodies() -> None:
    sql = (
        "-- head; comment\n"
        "INSERT INTO a VALUES (';');\n"
        "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n"
        "CREATE RULE r AS ON INSERT TO a DO ALSO (INSERT INTO b VALUES (1); DELETE FROM c);\n"
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql\n"
        "  BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;\n"
        'SELECT 1 AS "x;y"; /* c; d */\n'
        "bogus text that is not SQL"
    )
    pieces = split_postgres(sql)
    heads = [without_leading_comments(p).split()[0] for p in pieces]
    assert heads == ["INSERT", "CREATE", "CREATE", "CREATE", "SELECT", "bogus"]
    assert pieces[-1] == "/* c; d */\nbogus text that is not SQL"  # kept, never dropped


def test_unterminated_string_is_one_statement() -> None:
    assert split_postgres("SELECT 'oops; DROP TABLE t") == ["SELECT 'oops; DROP TABLE t"]


@pytest.mark.parametrize(
    ("sql", "accesses"),
    [
        pytest.param(
            'WITH x AS (SELECT 1) INSERT INTO s.T (a) SELECT * FROM x JOIN "Q" ON true '
            "WHERE a IN (SELECT b FROM public.z)",
            (acc("s.t", "WRITE"), acc("q", "READ"), acc("z", "READ")),
            id="cte-is-not-an-object",
        ),
        pytest.param(
            "UPDATE orders o SET total = p.total FROM prices p WHERE p.id = o.id",
            (acc("orders", "WRITE"), acc("prices", "READ")),
            id="update-from",
        ),
        pytest.param(
            "CREATE INDEX CONCURRENTLY idx ON public.items (qty)",
            (acc("idx", "CREATE", INDEX), acc("items", "READ", TABLE)),
            id="create-index",
        ),
        pytest.param(
            "CREATE TRIGGER tr AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION audit()",
            (acc("tr", "CREATE", TRIGGER), acc("audit", "READ"), acc("orders", "READ", TABLE)),
            id="create-trigger",
        ),
        pytest.param(
            "ALTER TABLE orders ADD COLUMN c int REFERENCES customers(id)",
            (acc("orders", "ALTER", TABLE), acc("customers", "READ")),
            id="alter-add-fk",
        ),
        pytest.param(
            "ALTER TABLE t RENAME TO u",
            (acc("t", "ALTER", TABLE), acc("u", "CREATE", TABLE)),
            id="rename",
        ),
        pytest.param(
            "DROP TRIGGER tr ON orders",
            (acc("orders", "ALTER", TABLE), acc("tr", "DROP", TRIGGER)),
            id="drop-trigger",
        ),
        pytest.param(
            "SELECT nextval('orders_id_seq'), s.f(1) FROM pg_catalog.pg_class",
            (acc("orders_id_seq", "WRITE"), acc("s.f", "READ")),
            id="sequence-write-and-routine",
        ),
        pytest.param(
            "CREATE TABLE p1 PARTITION OF parent FOR VALUES IN (1)",
            (acc("p1", "CREATE", TABLE), acc("parent", "ALTER", TABLE)),
            id="partition",
        ),
        pytest.param(
            "CREATE VIEW v AS SELECT * FROM t JOIN u USING (id)",
            (acc("v", "CREATE", VIEW), acc("t", "READ"), acc("u", "READ")),
            id="view",
        ),
        pytest.param("VACUUM items", (acc("items", "READ"),), id="vacuum-reads"),
        pytest.param("BEGIN", (), id="transaction-control"),
        pytest.param("ALTER TYPE mood ADD VALUE 'meh'", (acc("mood", "ALTER"),), id="enum"),
    ],
)
def test_static_scope(sql: str, accesses: tuple[Access, ...]) -> None:
    assert scope_of(sql) == (accesses, None)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        pytest.param(
            "DO $$ BEGIN DELETE FROM t; END $$",
            "a DO block's body is code, not a statement rollproof can read; declare what it "
            "touches and rehearse with --allow-undeclared (the server still enforces the "
            "declaration), or write its statements out",
            id="do",
        ),
        pytest.param(
            "bogus",
            'PostgreSQL\'s parser refuses it: syntax error at or near "bogus"',
            id="garbage",
        ),
        pytest.param(
            "CREATE INDEX ON t (a)",
            "CREATE INDEX without a name: the name PostgreSQL picks is not known",
            id="unnamed-index",
        ),
    ],
)
def test_unknown_statements_say_why(sql: str, reason: str) -> None:
    assert scope_of(sql)[1] == reason


def test_undeclared_uses_the_postgres_names() -> None:
    scopes = static_scope(
        "UPDATE public.orders SET x = 1; DELETE FROM audit.log", dialect=POSTGRESQL
    )
    missing = undeclared(scopes, reads=[], writes=["orders"])
    assert [(u.statement, u.object, str(u.missing_from)) for u in missing] == [
        (2, "audit.log", "writes")
    ]


def test_lint_destructive() -> None:
    sql = (
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(10), DROP COLUMN d;\n"
        "DROP TABLE a, s.b;\nUPDATE t SET a = 1;\nDELETE FROM t;\nTRUNCATE a;\n"
        "DELETE FROM t WHERE id = 1;"
    )
    risks = [(r.statement, r.code, r.object) for r in lint_destructive(sql, dialect=POSTGRESQL)]
    assert risks == [
        (1, RiskCode.TYPE_CHANGE, "t"),
        (1, RiskCode.DROP_COLUMN, "t"),
        (2, RiskCode.DROP_TABLE, "a"),
        (2, RiskCode.DROP_TABLE, "s.b"),
        (3, RiskCode.UPDATE_ALL, "t"),
        (4, RiskCode.DELETE_ALL, "t"),
        (5, RiskCode.TRUNCATE, "a"),
    ]
    [type_change] = [
        r for r in lint_destructive(sql, dialect=POSTGRESQL) if r.code == "TYPE_CHANGE"
    ]
    assert "to type VARCHAR(10)" in type_change.message


@pytest.mark.parametrize(
    ("sql", "version", "why"),
    [
        pytest.param(
            "CREATE INDEX CONCURRENTLY i ON t (a)", 150000, "CREATE INDEX CONCURRENTLY", id="cic"
        ),
        pytest.param("DROP INDEX CONCURRENTLY i", 150000, "DROP INDEX CONCURRENTLY", id="dic"),
        pytest.param("REINDEX (CONCURRENTLY) INDEX i", 150000, "REINDEX CONCURRENTLY", id="ric"),
        pytest.param("VACUUM t", 150000, "VACUUM", id="vacuum"),
        pytest.param("ALTER TYPE e ADD VALUE 'x'", 110000, "ADD VALUE", id="enum-old-server"),
        pytest.param("ALTER TYPE e ADD VALUE 'x'", 150000, None, id="enum-new-server"),
        pytest.param("ANALYZE t", 150000, None, id="analyze-is-fine"),
        pytest.param("CREATE INDEX i ON t (a)", 150000, None, id="plain-index"),
    ],
)
def test_statements_that_refuse_a_transaction(sql: str, version: int, why: str | None) -> None:
    reason = not_in_transaction(parse_one(sql), version)
    if why is None:
        assert reason is None
    else:
        assert reason is not None
        assert why in reason


@pytest.mark.parametrize(
    ("sql", "own"),
    [
        ("BEGIN", True),
        ("START TRANSACTION", True),
        ("COMMIT", True),
        ("ROLLBACK", True),
        ("PREPARE TRANSACTION 'x'", True),
        ("SAVEPOINT s", False),
        ("ROLLBACK TO SAVEPOINT s", False),
        ("RELEASE s", False),
    ],
)
def test_which_transaction_statements_are_the_scripts_own(sql: str, own: bool) -> None:
    assert manages_transaction(parse_one(sql)) is own
