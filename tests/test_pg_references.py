"""A foreign key to a table the change only reads (issue 17): REFERENCES on declared reads.

Real source and scratch servers (tests.pg_fixtures): the change adds a foreign key from orders
to customers. Declared under `reads`, customers is granted SELECT and REFERENCES and the
rehearsal passes; not declared at all, the server still refuses the key.
"""

from __future__ import annotations

from typing import Any

from rollproof.core.model import LegName, Verdict
from rollproof.rehearse.flow import RehearsalResult, rehearse
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text);
CREATE TABLE orders (id int PRIMARY KEY, customer int);
INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 20) AS i;
INSERT INTO orders SELECT i, 1 + i % 20 FROM generate_series(1, 50) AS i;
"""
APPLY = (
    "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk "
    "FOREIGN KEY (customer) REFERENCES customers (id);\n"
)
REVERT = "ALTER TABLE orders DROP CONSTRAINT orders_customer_fk;\n"
LEGS = [LegName.TRANSACTION, LegName.REVERT]


def _run(pg_servers: Servers, dsn: str, change: Any) -> RehearsalResult:
    return rehearse(change, dsn, scratch=pg_servers.scratch, legs=LEGS)


def test_a_foreign_key_to_a_declared_read_table_passes(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SCHEMA)
    change = make_pg_change(
        APPLY, REVERT, surfaces='reads = ["customers"]\nwrites = ["orders", "orders_customer_fk"]\n'
    )
    result = _run(pg_servers, dsn, change)
    assert [(leg.name, leg.verdict) for leg in result.legs] == [
        (LegName.TRANSACTION, Verdict.PASS),
        (LegName.REVERT, Verdict.PASS),
    ], [leg.reason for leg in result.legs]
    assert result.overall is Verdict.PASS
    assert result.surfaces.events == ()


def test_a_foreign_key_to_an_undeclared_table_is_still_refused(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SCHEMA)
    change = make_pg_change(APPLY, REVERT, surfaces='writes = ["orders", "orders_customer_fk"]\n')
    result = _run(pg_servers, dsn, change)
    [txn, revert] = result.legs
    expected = (
        "apply failed: statement 1 `ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN "
        "KEY (customer) R...` (SQLSTATE 42501) failed: permission denied for table customers"
    )
    assert (txn.verdict, txn.reason) == (Verdict.FAIL, expected)
    assert (revert.verdict, revert.reason) == (Verdict.FAIL, expected)
    assert result.overall is Verdict.FAIL
