"""Static scope, destructive-change lint and undeclared surfaces, read from SQL text alone."""

from __future__ import annotations

import pytest

from rollproof.core.surface import (
    PROVEN_BY,
    Access,
    AccessKind,
    ObjectType,
    Risk,
    RiskCode,
    StatementScope,
    Surface,
    Undeclared,
)
from rollproof.surfaces.static import lint_destructive, static_scope, undeclared

TABLE, VIEW, INDEX, TRIGGER, UNKNOWN = (
    ObjectType.TABLE,
    ObjectType.VIEW,
    ObjectType.INDEX,
    ObjectType.TRIGGER,
    ObjectType.UNKNOWN,
)


def read(name: str, object_type: ObjectType = UNKNOWN) -> Access:
    return Access(name, AccessKind.READ, object_type)


def write(name: str, object_type: ObjectType = UNKNOWN) -> Access:
    return Access(name, AccessKind.WRITE, object_type)


def create(name: str, object_type: ObjectType) -> Access:
    return Access(name, AccessKind.CREATE, object_type)


def alter(name: str, object_type: ObjectType = TABLE) -> Access:
    return Access(name, AccessKind.ALTER, object_type)


def drop(name: str, object_type: ObjectType) -> Access:
    return Access(name, AccessKind.DROP, object_type)


def only(sql: str, dialect: str = "sqlite") -> StatementScope:
    scopes = static_scope(sql, dialect=dialect)
    assert len(scopes) == 1, scopes
    return scopes[0]


# --- static scope: one statement of each kind --------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "SELECT a FROM t JOIN u ON t.id = u.id WHERE x IN (SELECT y FROM v)",
            (read("t"), read("u"), read("v")),
            id="select-join-subquery",
        ),
        pytest.param(
            "WITH recent AS (SELECT * FROM orders) SELECT * FROM recent JOIN customers USING (id)",
            (read("customers"), read("orders")),
            id="select-cte-is-not-an-object",
        ),
        pytest.param(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
            "INSERT INTO numbers SELECT n FROM r",
            (write("numbers"),),
            id="insert-from-recursive-cte",
        ),
        pytest.param(
            "SELECT * FROM main.orders",
            (read("orders"),),
            id="select-main-prefix-stripped",
        ),
        pytest.param(
            "SELECT * FROM aux.scratch",
            (read("aux.scratch"),),
            id="select-other-schema-kept",
        ),
        pytest.param(
            "SELECT * FROM temp.scratch",
            (),
            id="select-temp-schema-the-scripts-own",
        ),
        pytest.param(
            "SELECT j.value FROM t, json_each(t.doc) AS j",
            (read("t"),),
            id="select-table-function-is-not-an-object",
        ),
        pytest.param(
            "SELECT * FROM t INDEXED BY t_a",
            (read("t"), read("t_a", INDEX)),
            id="select-indexed-by",
        ),
        pytest.param(
            'INSERT INTO main."Audit_Log" (a) SELECT b FROM Source',
            (write("audit_log"), read("source")),
            id="insert-select",
        ),
        pytest.param(
            "INSERT INTO t (a, b) VALUES (1, 2) "
            "ON CONFLICT (a) DO UPDATE SET b = (SELECT max(b) FROM u)",
            (write("t"), read("u")),
            id="insert-upsert",
        ),
        pytest.param(
            "INSERT INTO t SELECT * FROM t",
            (write("t"), read("t")),
            id="insert-from-itself",
        ),
        pytest.param(
            "UPDATE t SET a = (SELECT max(b) FROM u) WHERE id IN (SELECT id FROM v)",
            (write("t"), read("u"), read("v")),
            id="update-where-subqueries",
        ),
        pytest.param(
            "UPDATE t SET a = u.a FROM u WHERE t.id = u.id",
            (write("t"), read("u")),
            id="update-from",
        ),
        pytest.param(
            "DELETE FROM t WHERE id IN (SELECT id FROM gone)",
            (write("t"), read("gone")),
            id="delete-where-subquery",
        ),
        pytest.param(
            "CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT)",
            (create("customers", TABLE),),
            id="create-table",
        ),
        pytest.param(
            "CREATE TABLE archive AS SELECT * FROM orders WHERE year < 2020",
            (create("archive", TABLE), read("orders")),
            id="create-table-as-select",
        ),
        pytest.param(
            "CREATE TABLE line (id INTEGER PRIMARY KEY, order_id INT REFERENCES orders (id))",
            (create("line", TABLE), read("orders")),
            id="create-table-references",
        ),
        pytest.param(
            "CREATE UNIQUE INDEX IF NOT EXISTS customers_name ON customers (name)",
            (create("customers_name", INDEX), read("customers", TABLE)),
            id="create-index",
        ),
        pytest.param(
            "CREATE VIEW big(id) AS SELECT o.id FROM orders o JOIN lines l USING (id)",
            (create("big", VIEW), read("lines"), read("orders")),
            id="create-view",
        ),
        pytest.param(
            "CREATE TRIGGER orders_audit AFTER INSERT ON orders "
            "WHEN new.total > (SELECT limit_ FROM caps) "
            "BEGIN INSERT INTO audit VALUES (new.id, 'a; b'); "
            "UPDATE counters SET n = n + 1 WHERE name IN (SELECT name FROM names); END",
            (
                create("orders_audit", TRIGGER),
                write("audit"),
                write("counters"),
                read("caps"),
                read("names"),
                read("orders", TABLE),
            ),
            id="create-trigger",
        ),
        pytest.param(
            "CREATE TEMP TRIGGER IF NOT EXISTS main.v_upd INSTEAD OF UPDATE OF a, b ON v "
            "FOR EACH ROW BEGIN DELETE FROM t WHERE id = old.id; END",
            (write("t"), read("v", VIEW)),  # the TEMP trigger itself is the script's own
            id="create-trigger-instead-of-on-view",
        ),
        pytest.param("ALTER TABLE t ADD COLUMN c INT", (alter("t"),), id="alter-add-column"),
        pytest.param("ALTER TABLE t DROP COLUMN c", (alter("t"),), id="alter-drop-column"),
        pytest.param("ALTER TABLE t DROP c", (alter("t"),), id="alter-drop-without-column-word"),
        pytest.param("ALTER TABLE t RENAME COLUMN a TO b", (alter("t"),), id="alter-rename-column"),
        pytest.param(
            "ALTER TABLE main.t RENAME TO t_old",
            (alter("t"), create("t_old", TABLE)),
            id="alter-rename-to",
        ),
        pytest.param("DROP TABLE IF EXISTS t", (drop("t", TABLE),), id="drop-table"),
        pytest.param("DROP VIEW v", (drop("v", VIEW),), id="drop-view"),
        pytest.param("DROP INDEX main.ix", (drop("ix", INDEX),), id="drop-index"),
        pytest.param("DROP TRIGGER tr", (drop("tr", TRIGGER),), id="drop-trigger"),
        pytest.param(
            "INSERT INTO notes (body) VALUES ('done; DROP TABLE x')",
            (write("notes"),),
            id="string-holding-a-drop",
        ),
    ],
)
def test_scope_of_each_statement_kind(sql: str, expected: tuple[Access, ...]) -> None:
    scope = only(sql)
    assert scope.unknown is None
    assert scope.accesses == expected


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("PRAGMA foreign_keys = ON", id="pragma-set"),
        pytest.param("PRAGMA main.table_info(t)", id="pragma-call"),
        pytest.param("BEGIN", id="begin"),
        pytest.param("BEGIN IMMEDIATE TRANSACTION", id="begin-immediate"),
        pytest.param("COMMIT", id="commit"),
        pytest.param("END TRANSACTION", id="end"),
        pytest.param("ROLLBACK", id="rollback"),
        pytest.param("ROLLBACK TO SAVEPOINT sp", id="rollback-to"),
        pytest.param("SAVEPOINT sp", id="savepoint"),
        pytest.param("RELEASE sp", id="release"),
        pytest.param("RELEASE SAVEPOINT sp", id="release-savepoint"),
    ],
)
def test_session_and_transaction_statements_touch_no_object(sql: str) -> None:
    assert only(sql) == StatementScope(index=1, text=sql, accesses=(), unknown=None)


@pytest.mark.parametrize(
    ("sql", "accesses", "reason"),
    [
        pytest.param(
            "UPDATE OR IGNORE t SET a = 1",
            (),
            "sqlglot cannot parse it: Expected table name but got 'OR' (line 1, column 9)",
            id="parse-error",
        ),
        pytest.param(
            "SELECT 'never closed",
            (),
            'SQLite refuses it: unrecognized token: "\'never closed"',
            id="tokenize-error",
        ),
        pytest.param(
            "VACUUM INTO 'copy.db'",
            (),
            "VACUUM INTO writes a copy of the database to a file, which a change may not do; "
            "take the copy outside the change",
            id="command-fallback",
        ),
        pytest.param(
            "REINDEX",
            (),
            "REINDEX without a name rebuilds every index of the database; name the table or "
            "index (REINDEX t), or declare every index in writes",
            id="misread-as-bare-expression",
        ),
        pytest.param(
            "ATTACH DATABASE 'other.db' AS other",
            (),
            "ATTACH is refused at run time: a change may not open another database file "
            "(ATTACH '' AS x, a private temporary database, is the exception)",
            id="attach",
        ),
        pytest.param(
            "CREATE INDEX main.ix ON t (a)",
            (),
            "sqlglot did not read the index's name, table and columns",
            id="schema-qualified-index-misread",
        ),
        pytest.param(
            "CREATE VIRTUAL TABLE docs USING fts5(body)",
            (create("docs", TABLE),),
            "a virtual table's module may create tables it does not name; declare its "
            "shadow tables (name_data, name_idx, ...) and rehearse with --allow-undeclared",
            id="virtual-table",
        ),
        pytest.param(
            "CREATE TRIGGER tr AFTER DELETE ON t BEGIN "
            "DELETE FROM log WHERE id = old.id; UPDATE OR IGNORE u SET a = 1; END",
            (create("tr", TRIGGER), write("log"), read("t", TABLE)),
            "trigger body statement 2: sqlglot cannot parse it: "
            "Expected table name but got 'OR' (line 1, column 9)",
            id="trigger-body-statement-unparseable",
        ),
    ],
)
def test_statement_not_understood_is_unknown_with_its_reason(
    sql: str, accesses: tuple[Access, ...], reason: str
) -> None:
    scope = only(sql)
    assert scope.unknown == reason
    assert scope.accesses == accesses


def test_trigger_without_begin_end_body_is_unknown() -> None:
    scope = only("CREATE TRIGGER tr AFTER INSERT ON t EXECUTE FUNCTION f()", "postgres")
    assert scope.accesses == (create("tr", TRIGGER), read("t", TABLE))
    assert scope.unknown == "the trigger has no BEGIN ... END body rollproof can read"


def test_other_dialect_keeps_schema_and_reads_its_own_syntax() -> None:
    scopes = static_scope(
        "SELECT * FROM public.t; TRUNCATE TABLE a, b; CREATE SCHEMA s", dialect="postgres"
    )
    assert [(s.accesses, s.unknown) for s in scopes] == [
        ((read("public.t"),), None),
        ((write("a", TABLE), write("b", TABLE)), None),
        ((), "CREATE SCHEMA makes an object rollproof does not model"),
    ]


def test_unknown_dialect_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="nope"):
        static_scope("SELECT 1", dialect="nope")


# --- splitting -------------------------------------------------------------------------------


def test_semicolons_in_strings_comments_and_trigger_bodies_do_not_split() -> None:
    sql = (
        "-- first; a comment\n"
        "INSERT INTO notes (body) VALUES ('x; DROP TABLE x');\n"
        "/* b; c */ CREATE TRIGGER tr AFTER INSERT ON notes BEGIN\n"
        "  INSERT INTO log VALUES ('y; z');\n"
        "  DELETE FROM queue WHERE id = new.id;\n"
        "END;\n"
        "SELECT 1;\n"
        "-- trailing comment only\n"
    )
    scopes = static_scope(sql)
    assert [s.index for s in scopes] == [1, 2, 3]
    assert scopes[0].text == "INSERT INTO notes (body) VALUES ('x; DROP TABLE x')"
    assert scopes[0].accesses == (write("notes"),)
    assert scopes[1].text == (
        "CREATE TRIGGER tr AFTER INSERT ON notes BEGIN INSERT INTO log VALUES ('y; z'); "
        "DELETE FROM queue WHERE id = new.id; END"
    )
    assert scopes[1].accesses == (
        create("tr", TRIGGER),
        write("log"),
        write("queue"),
        read("notes", TABLE),
    )
    assert scopes[2] == StatementScope(index=3, text="SELECT 1", accesses=(), unknown=None)
    assert all(s.unknown is None for s in scopes)
    assert lint_destructive(sql) == ()


def test_other_dialect_splits_on_tokens_not_inside_strings() -> None:
    scopes = static_scope("SELECT 'a;b' FROM t; DELETE FROM u WHERE x = ';'", dialect="postgres")
    assert [(s.index, s.text, s.accesses) for s in scopes] == [
        (1, "SELECT 'a;b' FROM t", (read("t"),)),
        (2, "DELETE FROM u WHERE x = ';'", (write("u"),)),
    ]


def test_text_is_folded_and_cut() -> None:
    columns = ", ".join(f"column_{n}" for n in range(40))
    (scope,) = static_scope(f"SELECT\n    {columns}\nFROM   t")
    assert len(scope.text) == 120
    assert scope.text.startswith("SELECT column_0, column_1, ")
    assert scope.text.endswith("...")


def test_empty_script_has_no_statements() -> None:
    assert static_scope("  -- nothing\n ; ;") == ()


# --- destructive-change lint -----------------------------------------------------------------


def test_drop_table_risk_in_full() -> None:
    assert lint_destructive("CREATE TABLE keep (a);\nDROP TABLE Customers;") == (
        Risk(
            statement=2,
            text="DROP TABLE Customers",
            code=RiskCode.DROP_TABLE,
            object="customers",
            message="drops table customers and every row in it",
            proven_by=PROVEN_BY[RiskCode.DROP_TABLE],
        ),
    )
    assert "revert leg" in PROVEN_BY[RiskCode.DROP_TABLE]
    assert "restore leg" in PROVEN_BY[RiskCode.DROP_TABLE]


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        pytest.param(
            "DROP TABLE IF EXISTS main.t",
            "sqlite",
            [(RiskCode.DROP_TABLE, "t", "drops table t and every row in it")],
            id="drop-table-if-exists",
        ),
        pytest.param(
            "ALTER TABLE customers DROP COLUMN email",
            "sqlite",
            [
                (
                    RiskCode.DROP_COLUMN,
                    "customers",
                    "drops column email of table customers and its value in every row",
                )
            ],
            id="drop-column",
        ),
        pytest.param(
            "ALTER TABLE customers DROP email",
            "sqlite",
            [
                (
                    RiskCode.DROP_COLUMN,
                    "customers",
                    "drops column email of table customers and its value in every row",
                )
            ],
            id="drop-column-without-column-word",
        ),
        pytest.param(
            "DELETE FROM orders",
            "sqlite",
            [
                (
                    RiskCode.DELETE_ALL,
                    "orders",
                    "deletes every row of orders (no WHERE clause): a truncate in effect",
                )
            ],
            id="delete-without-where",
        ),
        pytest.param("DELETE FROM orders WHERE id = 1", "sqlite", [], id="delete-with-where"),
        pytest.param(
            "UPDATE orders SET total = 0",
            "sqlite",
            [
                (
                    RiskCode.UPDATE_ALL,
                    "orders",
                    "updates every row of orders (no WHERE clause), overwriting the old values",
                )
            ],
            id="update-without-where",
        ),
        pytest.param(
            "UPDATE orders SET total = 0 WHERE id = 1", "sqlite", [], id="update-with-where"
        ),
        pytest.param(
            "TRUNCATE TABLE a, b",
            "postgres",
            [
                (RiskCode.TRUNCATE, "a", "truncates table a, removing every row"),
                (RiskCode.TRUNCATE, "b", "truncates table b, removing every row"),
            ],
            id="truncate",
        ),
        pytest.param(
            "ALTER TABLE t ALTER COLUMN c TYPE varchar(10)",
            "postgres",
            [
                (
                    RiskCode.TYPE_CHANGE,
                    "t",
                    "changes column c of table t to type VARCHAR(10); this may narrow it and "
                    "truncate, round or reject values (the old width is not known statically)",
                )
            ],
            id="postgres-alter-column-type",
        ),
        pytest.param(
            "ALTER TABLE t MODIFY COLUMN c varchar(10)",
            "mysql",
            [
                (
                    RiskCode.TYPE_CHANGE,
                    "t",
                    "changes column c of table t to type VARCHAR(10); this may narrow it and "
                    "truncate, round or reject values (the old width is not known statically)",
                )
            ],
            id="mysql-modify-column",
        ),
        pytest.param(
            "ALTER TABLE t ALTER COLUMN c SET DEFAULT 1", "postgres", [], id="set-default"
        ),
        pytest.param("DROP VIEW v; DROP INDEX ix", "sqlite", [], id="drop-view-and-index"),
        pytest.param("ALTER TABLE t RENAME TO u", "sqlite", [], id="rename-table"),
        pytest.param(
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM log; END",
            "sqlite",
            [],
            id="trigger-body-not-applied",
        ),
        pytest.param(
            "SELECT 'DELETE FROM t; DROP TABLE t'", "sqlite", [], id="destructive-text-in-string"
        ),
    ],
)
def test_lint(sql: str, dialect: str, expected: list[tuple[RiskCode, str, str]]) -> None:
    risks = lint_destructive(sql, dialect=dialect)
    assert [(r.code, r.object, r.message) for r in risks] == expected
    assert all(r.statement == 1 and r.proven_by == PROVEN_BY[r.code] for r in risks)


def test_lint_names_the_statement_of_each_risk() -> None:
    sql = "DELETE FROM a WHERE id = 1; DELETE FROM b; UPDATE c SET x = 1; DROP TABLE d"
    risks = lint_destructive(sql)
    assert [(r.statement, r.text, r.code) for r in risks] == [
        (2, "DELETE FROM b", RiskCode.DELETE_ALL),
        (3, "UPDATE c SET x = 1", RiskCode.UPDATE_ALL),
        (4, "DROP TABLE d", RiskCode.DROP_TABLE),
    ]


def test_every_risk_code_says_which_leg_proves_it() -> None:
    assert set(PROVEN_BY) == set(RiskCode)
    assert all("revert leg" in text and "restore leg" in text for text in PROVEN_BY.values())


def test_unknown_statement_is_not_linted_but_is_reported_by_scope() -> None:
    sql = "UPDATE OR IGNORE t SET a = 1"
    assert lint_destructive(sql) == ()
    assert only(sql).unknown is not None


# --- undeclared surfaces ---------------------------------------------------------------------


def test_declared_names_match_case_insensitively() -> None:
    scopes = static_scope('INSERT INTO "Orders" SELECT * FROM Customers; SELECT * FROM LINES')
    assert undeclared(scopes, reads=["CUSTOMERS", "main.Lines"], writes=["orders"]) == ()


def test_undeclared_write_is_listed_with_its_statement() -> None:
    scopes = static_scope(
        "SELECT * FROM customers;\n"
        "UPDATE orders SET total = 0 WHERE id IN (SELECT id FROM customers);\n"
        "DELETE FROM audit WHERE id = 1"
    )
    assert undeclared(scopes, reads=["customers", "orders"], writes=["audit"]) == (
        Undeclared(
            statement=2,
            text="UPDATE orders SET total = 0 WHERE id IN (SELECT id FROM customers)",
            object="orders",
            kind=AccessKind.WRITE,
            object_type=UNKNOWN,
            missing_from=Surface.WRITES,
        ),
    )


def test_read_is_satisfied_by_reads_or_writes_and_listed_when_in_neither() -> None:
    scopes = static_scope("INSERT INTO a SELECT * FROM b JOIN c USING (id)")
    assert undeclared(scopes, reads=[], writes=["a", "b"]) == (
        Undeclared(
            statement=1,
            text="INSERT INTO a SELECT * FROM b JOIN c USING (id)",
            object="c",
            kind=AccessKind.READ,
            object_type=UNKNOWN,
            missing_from=Surface.READS,
        ),
    )


def test_read_of_an_undeclared_write_is_listed_once() -> None:
    scopes = static_scope("INSERT INTO t SELECT * FROM t")
    assert [(u.object, u.kind, u.missing_from) for u in undeclared(scopes, [], [])] == [
        ("t", AccessKind.WRITE, Surface.WRITES)
    ]


def test_object_created_earlier_is_not_declared_by_creating_it() -> None:
    scopes = static_scope(
        "CREATE TABLE staging (a);\n"
        "CREATE INDEX staging_a ON staging (a);\n"
        "INSERT INTO staging SELECT a FROM src"
    )
    found = undeclared(scopes, reads=["src"], writes=["staging"])
    assert [(u.statement, u.object, u.kind, u.object_type, u.missing_from) for u in found] == [
        (2, "staging_a", AccessKind.CREATE, INDEX, Surface.WRITES)
    ]


def test_every_kind_of_change_needs_writes() -> None:
    scopes = static_scope("ALTER TABLE t RENAME TO u; DROP VIEW v")
    found = undeclared(scopes, reads=["t", "u", "v"], writes=[])
    assert [(u.statement, u.object, u.kind) for u in found] == [
        (1, "t", AccessKind.ALTER),
        (1, "u", AccessKind.CREATE),
        (2, "v", AccessKind.DROP),
    ]
