"""PostgreSQL test fixtures: two real servers, a fresh source database per test, and the demo.

`scripts/test` starts two throwaway clusters (so the source and the scratch server have
different system identifiers) and exports their DSNs as ROLLPROOF_TEST_PG_SOURCE and
ROLLPROOF_TEST_PG_SCRATCH; with several test processes (pytest-xdist) it starts a pair per
process and exports space-separated lists, and process `gwN` takes the Nth pair (a test checks
its whole scratch server for leftovers, so two processes never share one). Without them the PostgreSQL tests skip with the reason, except in
CI (CI=true), where a missing server is a failure: these tests are the engine's proof.

Test modules import the fixture functions (`*_fixture`, registered under their short names).

Every source database a test makes is fingerprinted when made and again at teardown; a test
whose rehearsal changed the source by a single byte of content fails there.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rollproof.core.change import Change, load_change
from rollproof.engines.postgres.source import fingerprint_source

SOURCE_ENV, SCRATCH_ENV = "ROLLPROOF_TEST_PG_SOURCE", "ROLLPROOF_TEST_PG_SCRATCH"


@dataclass(frozen=True)
class Servers:
    source: str
    """DSN of the source server's maintenance database (superuser, trust over the socket)."""
    scratch: str

    def source_db(self, dbname: str) -> str:
        return with_db(self.source, dbname)


def row_digests_reference(header: dict[str, object], tuples: list[bytes]) -> str:
    """A row-digests table's digest from its rows' binary COPY tuples, as documented
    (docs/postgresql.md, Fingerprint): BLAKE3 over the header, then the rows' BLAKE2s-256
    digests sorted bytewise, one after another."""
    import hashlib

    import blake3

    from rollproof.core.canonical import canonical_json

    digests = sorted(hashlib.blake2s(t).digest() for t in tuples)
    described = header | {"row_digest": "blake2s-256 of the binary COPY tuple"}
    return "blake3:" + blake3.blake3(canonical_json(described) + b"".join(digests)).hexdigest()


def with_db(dsn: str, dbname: str) -> str:
    """`dsn` pointing at another database, in URI form (what rollproof is given)."""
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    host = params.pop("host", "")
    port = params.pop("port", "")
    user = params.pop("user", "")
    return f"postgresql://{user}@/{dbname}?host={host}&port={port}"


def admin(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"PostgreSQL servers unavailable in CI: {reason}")
    pytest.skip(f"PostgreSQL servers unavailable ({reason}); run scripts/test as root")


@pytest.fixture(scope="session", name="pg_servers")
def pg_servers_fixture() -> Servers:
    sources = os.environ.get(SOURCE_ENV, "").split()
    scratches = os.environ.get(SCRATCH_ENV, "").split()
    if not sources or not scratches:
        _unavailable(f"{SOURCE_ENV} and {SCRATCH_ENV} are not set")
    if len(sources) != len(scratches):
        pytest.fail(f"{SOURCE_ENV} and {SCRATCH_ENV} list different numbers of servers")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0)
    if index >= len(sources):
        pytest.fail(f"test process {worker} has no server pair of its own ({len(sources)} given)")
    source, scratch = sources[index], scratches[index]
    for dsn in (source, scratch):
        try:
            admin(dsn).close()
        except psycopg.Error as e:
            _unavailable(f"cannot connect: {e}")
    return Servers(source, scratch)


def database_names(dsn: str) -> set[str]:
    with admin(dsn) as conn:
        return {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database")}


def role_names(dsn: str) -> set[str]:
    with admin(dsn) as conn:
        return {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}


MakeSource = Callable[[str], str]


@pytest.fixture(name="pg_source")
def pg_source_fixture(pg_servers: Servers) -> Iterator[MakeSource]:
    """Make a fresh source database from SQL; its fingerprint must not change by teardown."""
    made: list[tuple[str, str]] = []

    def make(schema_sql: str) -> str:
        name = f"rp_test_{secrets.token_hex(4)}"
        with admin(pg_servers.source) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = pg_servers.source_db(name)
        with admin(dsn) as conn:
            conn.execute(schema_sql.encode())
        made.append((dsn, fingerprint_source(dsn).digest))
        return dsn

    yield make
    scratch_before = {n for n in database_names(pg_servers.scratch) if n.startswith("rollproof_")}
    for dsn, digest in made:
        assert fingerprint_source(dsn).digest == digest, "the source database changed"
    with admin(pg_servers.source) as conn:
        for dsn, _digest in made:
            name = conninfo_to_dict(dsn)["dbname"]
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    assert scratch_before == set(), f"scratch databases left behind: {scratch_before}"


def tcp_dsn(dsn: str, user: str, password: str) -> str:
    """The same server over TCP (127.0.0.1), where it asks for a password (scram-sha-256)."""
    params = conninfo_to_dict(dsn)
    return f"postgresql://{user}:{password}@127.0.0.1:{params['port']}/{params.get('dbname')}"


def conninfo(dsn: str) -> str:
    return make_conninfo(dsn)


# --- the demo, ported to PostgreSQL -------------------------------------------------------------

CUSTOMERS, ORDERS, EVENTS = 2_000, 4_000, 3_000

DEMO_SCHEMA = f"""
CREATE TYPE event_kind AS ENUM ('created', 'paid', 'shipped');
CREATE TABLE customers (
    id integer PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    credit numeric(10, 2),
    avatar bytea,
    notes text,
    fax text
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    status text NOT NULL CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
    total_cents integer NOT NULL,
    placed_at date NOT NULL
);
CREATE INDEX idx_orders_customer ON orders(customer_id);
CREATE TABLE order_events (order_id integer, kind event_kind, at date, payload bytea);
CREATE TABLE audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL,
    row_id integer NOT NULL,
    action text NOT NULL,
    at timestamptz NOT NULL
);
CREATE FUNCTION audit_orders_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (table_name, row_id, action, at)
    VALUES ('orders', NEW.id, 'status:' || NEW.status, '2026-01-01T00:00:00Z');
    RETURN NEW;
END $$;
CREATE TRIGGER trg_orders_status AFTER UPDATE OF status ON orders
    FOR EACH ROW EXECUTE FUNCTION audit_orders_status();
CREATE VIEW customer_totals AS
    SELECT customer_id, count(*) AS orders, sum(total_cents) AS total_cents
    FROM orders GROUP BY customer_id;
INSERT INTO customers
SELECT i, 'customer' || i || '@example.com', 'Customer ' || i,
       timestamptz '2025-01-01 00:00:00+00' + i * interval '37 minutes',
       CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 7919 % 500000) / 100.0 END,
       CASE WHEN i % 10 = 0 THEN decode(md5(i::text), 'hex') END,
       CASE WHEN i % 3 = 0 THEN 'note ' || (i * 104729 % 1000000) END,
       CASE WHEN i % 5 < 2 THEN '+1-555-' || lpad((i * 7877 % 10000000)::text, 7, '0') END
FROM generate_series(1, {CUSTOMERS}) AS i;
INSERT INTO orders (customer_id, status, total_cents, placed_at)
SELECT 1 + (i * 7919) % {CUSTOMERS},
       (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + i % 4],
       100 + (i * 104729) % 89900,
       date '2026-01-01' + (i % 280)
FROM generate_series(1, {ORDERS}) AS i;
INSERT INTO order_events
SELECT 1 + (i * 31) % {ORDERS}, (ARRAY['created', 'paid', 'shipped'])[1 + i % 3]::event_kind,
       date '2026-01-01' + (i % 280), CASE WHEN i % 4 = 0 THEN decode(md5(i::text), 'hex') END
FROM generate_series(1, {EVENTS}) AS i;
UPDATE orders SET status = 'shipped' WHERE id % 97 = 0;
ANALYZE;
"""

DEMO_CHANGES: dict[str, dict[str, str]] = {
    "add-order-priority": {
        "change.toml": (
            'id = "add-order-priority"\n'
            'apply = "apply.sql"\nrevert = "revert.sql"\nverify = "verify.sql"\n\n'
            "[surfaces]\n"
            'reads = ["orders"]\nwrites = ["orders", "audit_log", "idx_orders_priority"]\n'
        ),
        "apply.sql": (
            "-- Add a priority flag to orders, backfilled from the order total.\n"
            "ALTER TABLE orders ADD COLUMN priority integer NOT NULL DEFAULT 0;\n"
            "UPDATE orders SET priority = 1 WHERE total_cents > 40000;\n"
            "CREATE INDEX idx_orders_priority ON orders(priority);\n"
            "INSERT INTO audit_log (table_name, row_id, action, at)\n"
            "VALUES ('orders', 0, 'migration:add-order-priority', '2026-11-24T00:00:00Z');\n"
        ),
        "revert.sql": (
            "DELETE FROM audit_log WHERE action = 'migration:add-order-priority';\n"
            "DROP INDEX idx_orders_priority;\n"
            "ALTER TABLE orders DROP COLUMN priority;\n"
        ),
        "verify.sql": "SELECT count(*) FROM orders WHERE priority NOT IN (0, 1);\n",
    },
    "drop-customer-fax": {
        "change.toml": (
            'id = "drop-customer-fax"\n'
            'apply = "apply.sql"\nrevert = "revert.sql"\nverify = "verify.sql"\n\n'
            '[surfaces]\nreads = ["customers"]\nwrites = ["customers"]\n'
        ),
        "apply.sql": "-- Nobody sends faxes any more.\nALTER TABLE customers DROP COLUMN fax;\n",
        "revert.sql": "-- Put the column back.\nALTER TABLE customers ADD COLUMN fax text;\n",
        "verify.sql": "SELECT count(*) FROM customers;\n",
    },
}


def write_change(root: Path, files: dict[str, str]) -> Change:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return load_change(root)


MakePgChange = Callable[..., Change]


@pytest.fixture(name="make_pg_change")
def make_pg_change_fixture(tmp_path: Path) -> MakePgChange:
    """A change directory from inline PostgreSQL SQL and its [surfaces] body."""
    counter = iter(range(1_000_000))

    def make(apply: str, revert: str, *, surfaces: str, extra: str = "") -> Change:
        files = {
            "apply.sql": apply,
            "revert.sql": revert,
            "change.toml": 'apply = "apply.sql"\nrevert = "revert.sql"\n'
            + extra
            + "\n[surfaces]\n"
            + surfaces,
        }
        return write_change(tmp_path / "changes" / f"pg-change-{next(counter)}", files)

    return make
