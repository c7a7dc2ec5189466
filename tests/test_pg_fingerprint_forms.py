"""The PostgreSQL fingerprint's binary reading, over a matrix of column types.

Every type is read in a form whose bytes do not depend on the server (catalog.TABLE_COLUMNS):
a source and its pg_dump/pg_restore copy on another cluster, where every user type, and every
object an OID alias names, has another OID, must fingerprint the same table by table, with and
without a primary key; and one changed value must change the table's digest.
"""

from __future__ import annotations

import secrets
import struct
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import blake3
import pytest
from psycopg import sql

from rollproof.core.canonical import canonical_json
from rollproof.engines.postgres import catalog
from rollproof.engines.postgres.source import fingerprint_source
from tests.pg_fixtures import (
    MakeSource,
    Servers,
    admin,
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    row_digests_reference,
    with_db,
)

TYPES = """
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (x integer, y text);
CREATE TYPE floatrange AS RANGE (subtype = float8);
CREATE DOMAIN tags AS text[];
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN bits8 AS bit(8);
CREATE DOMAIN ratio AS double precision;
CREATE TABLE target (id integer);
CREATE TABLE zz (); CREATE TABLE aa ();  -- made in this order here; pg_restore makes aa first
CREATE TABLE regkey (r regclass PRIMARY KEY, n integer);
INSERT INTO regkey VALUES ('zz', 1), ('aa', 2);
"""

NAN = "('Infinity'::float8 - 'Infinity'::float8)"  # a NaN with its sign bit set

# (type, form it is read in, two values, a different value). Each pair of values includes what
# a text round trip must keep (scale, -0, escapes) or what only its binary form shows.
MATRIX: list[tuple[str, str, str, str, str]] = [
    ("integer", "binary", "1", "-5", "7"),
    ("bigint", "binary", "9007199254740993", "0", "1"),
    ("numeric", "binary", "1.50", "1.500", "1.5"),
    ("double precision", "float", NAN, "'-0'", "'0'"),
    ("real", "float", f"{NAN}::real", "'1.5'", "'2.5'"),
    ("text", "binary", "E'a\\tb\\\\'", "'ü'", "'u'"),
    ("varchar(5)", "binary", "'a'", "''", "'b'"),
    ("char(3)", "binary", "'a'", "'ab'", "'b'"),
    ("bytea", "binary", "'\\x00ff'", "''", "'\\x00'"),
    ("boolean", "binary", "true", "false", "NOT true"),
    ("date", "binary", "'2026-12-05'", "'infinity'", "'2026-12-06'"),
    ("timestamp", "binary", "'2026-12-05 10:00:00.123456'", "'-infinity'", "'2026-12-05'"),
    ("timestamptz", "binary", "'2026-12-05 10:00+02'", "'2026-12-05 08:00Z'", "'2026-12-05'"),
    ("time", "binary", "'10:00'", "'23:59:59.999999'", "'10:01'"),
    ("timetz", "binary", "'10:00+02'", "'08:00+00'", "'10:00+03'"),
    ("interval", "binary", "'1 day'", "'24 hours'", "'2 days'"),
    ("uuid", "binary", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "gen_random_uuid()", "NULL"),
    ("inet", "binary", "'10.0.0.1/8'", "'::1'", "'10.0.0.1'"),
    ("macaddr", "binary", "'08:00:2b:01:02:03'", "'00:00:00:00:00:00'", "'08:00:2b:01:02:04'"),
    ("money", "binary", "'1.50'", "'-2'", "'1.51'"),
    ("bit(8)", "binary", "B'10101010'", "B'00000000'", "B'10101011'"),
    ("varbit", "binary", "B'1'", "B''", "B'10'"),
    ("jsonb", "binary", "'{\"a\": [1.0, null]}'", "'1.00'", "'{\"a\": [1, null]}'"),
    ("json", "binary", "'{\"a\":  1}'", "'[]'", "'{\"a\": 1}'"),
    ("xml", "binary", "'<a>x</a>'", "'<b/>'", "'<a>y</a>'"),
    ("tsvector", "binary", "'a:1 b:2'", "''", "'a:1'"),
    ("tsquery", "binary", "'a & !b'", "'a <-> b'", "'a | b'"),
    ("int4range", "binary", "'[1,5)'", "'empty'", "'[1,6)'"),
    ("tstzrange", "binary", "'[2026-01-01,)'", "'(,)'", "'[2026-01-02,)'"),
    ("int4multirange", "binary", "'{[1,2),[5,9)}'", "'{}'", "'{[1,3)}'"),
    ("pg_lsn", "binary", "'16/B374D848'", "'0/0'", "'16/B374D849'"),
    ("oid", "binary", "12345", "0", "12346"),
    ("integer[]", "text", "(ARRAY[1, NULL, 3])[1:1]", "'{{1,2},{3,4}}'", "'{2}'"),
    ("text[]", "text", "ARRAY['a', NULL, 'b,c']", "'{}'", "ARRAY['a']"),
    ("point", "text", "point(1, 2)", "point(-0.0, 0)", "point(1, 3)"),
    ("box", "text", "box '((0,0),(1,1))'", "box '((0,0),(0,0))'", "box '((0,0),(2,1))'"),
    ("mood", "text", "'ok'", "'sad'", "'happy'"),
    ("mood[]", "text", "ARRAY['ok', 'happy']::mood[]", "'{}'", "ARRAY['ok']::mood[]"),
    ("pair", "text", "ROW(1, 'a')::pair", "ROW(NULL, '')::pair", "ROW(1, 'b')::pair"),
    ("pair[]", "text", "ARRAY[ROW(1, 'a')::pair]", "'{}'", "ARRAY[ROW(2, 'a')::pair]"),
    ("floatrange", "text", "floatrange(1.5, 2)", "'empty'", "floatrange(1.5, 3)"),
    ("floatmultirange", "text", "'{[1,2)}'", "'{}'", "'{[1,3)}'"),
    ("tags", "text", "ARRAY['x', NULL]::tags", "'{}'", "ARRAY['y']::tags"),
    ("posint", "binary", "1", "2", "3"),
    ("bits8", "binary", "B'10101010'", "B'00000000'", "B'00000001'"),
    ("ratio", "float", NAN, "'-0'", "'0'"),
    ("citext", "text", "'Abc'", "'abc'", "'ABC'"),
    ("regclass", "text", "'target'::regclass", "'pg_class'::regclass", "'k0'::regclass"),
    ("regtype", "text", "'mood'::regtype", "'integer'::regtype", "'pair'::regtype"),
    ("regtype[]", "text", "ARRAY['mood'::regtype]", "'{}'", "ARRAY['pair'::regtype]"),
]


def _source_sql() -> str:
    script = [TYPES]
    for i, (type_, _form, a, b, _c) in enumerate(MATRIX):
        script.append(f"CREATE TABLE k{i} (id integer PRIMARY KEY, v {type_});")
        script.append(f"INSERT INTO k{i} VALUES (1, {a}), (2, {b}), (3, NULL);")
        script.append(f"CREATE TABLE b{i} (v {type_});")
        script.append(f"INSERT INTO b{i} VALUES ({a}), ({b}), ({b}), (NULL);")
    return "\n".join(script)


@pytest.fixture(name="restored")
def restored_fixture(
    pg_servers: Servers, pg_source: MakeSource, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """A source holding the matrix, and its pg_dump/pg_restore copy on the scratch server."""
    source = pg_source(_source_sql())
    name = f"rp_test_copy_{secrets.token_hex(4)}"
    dump = tmp_path / "source.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), source], check=True)
    with admin(pg_servers.scratch) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    copy = with_db(pg_servers.scratch, name)
    try:
        subprocess.run(["pg_restore", "--exit-on-error", "-d", copy, str(dump)], check=True)
        yield source, copy
    finally:
        with admin(pg_servers.scratch) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_every_type_reads_the_same_from_a_restored_copy_and_a_change_shows(
    restored: tuple[str, str],
) -> None:
    source, copy = restored
    ask = "SELECT 'mood'::regtype::oid, 'target'::regclass::oid"
    with admin(source) as conn:
        oids = conn.execute(ask).fetchone()
    with admin(copy) as conn:
        assert conn.execute(ask).fetchone() != oids  # every user type's OID differs there
    before, after = fingerprint_source(source), fingerprint_source(copy)
    for i, (type_, form, _a, _b, _c) in enumerate(MATRIX):
        for table, order, rows in ((f"k{i}", "primary-key", 3), (f"b{i}", "row-digests", 4)):
            got = after.tables[table]
            assert (got.order, got.rows) == (order, rows), type_
            assert got == before.tables[table], f"{type_}: the restored copy reads differently"
        assert _forms(copy, f"k{i}") == ["binary", form], type_
    assert after.digest == before.digest
    # A key over OIDs orders differently once restored, so such a table is read as row digests.
    ask = "SELECT 'zz'::regclass::oid < 'aa'::regclass::oid"
    with admin(source) as conn, admin(copy) as other:
        assert (conn.execute(ask).fetchone(), other.execute(ask).fetchone()) == ((True,), (False,))
    assert after.tables["regkey"].order == "row-digests"

    with admin(copy) as conn:
        for i, (_type, _form, _a, _b, changed) in enumerate(MATRIX):
            conn.execute(f"UPDATE k{i} SET v = {changed} WHERE id = 1")
            conn.execute(f"UPDATE b{i} SET v = {changed} WHERE ctid = '(0,1)'")
    moved = fingerprint_source(copy)
    for i, (type_, _form, _a, _b, _c) in enumerate(MATRIX):
        for table in (f"k{i}", f"b{i}"):
            assert moved.tables[table].digest != before.tables[table].digest, f"{type_}: {table}"


def _forms(dsn: str, table: str) -> list[str]:
    with admin(dsn) as conn:
        return [str(r[6]) for r in conn.execute(catalog.TABLE_COLUMNS, (table, table))]


def _field(value: bytes | None) -> bytes:
    return struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value


PGCOPY = b"PGCOPY\n\xff\r\n\x00" + bytes(8)


def _digest(header: Mapping[str, object], rows: list[bytes]) -> str:
    stream = PGCOPY + b"".join(rows) + b"\xff\xff"
    return "blake3:" + blake3.blake3(canonical_json(header) + stream).hexdigest()


def test_digests_follow_the_documented_algorithm(pg_source: MakeSource) -> None:
    dsn = pg_source(
        # Every plan costed as parallel-worthy, so a scan may come from parallel workers in any
        # order: the digest must not show it.
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET parallel_setup_cost = 0; "
        "ALTER DATABASE %I SET min_parallel_table_scan_size = 0', current_database(), "
        "current_database()); END $$;"
        "CREATE TABLE k (name text PRIMARY KEY, n integer);"
        "INSERT INTO k VALUES ('b', 2), ('B', 1), (E'a\\tb', NULL), ('', 0);"
        "CREATE TABLE bag (x integer, y double precision);"
        "INSERT INTO bag VALUES (2, 0.5), (NULL, 1), (1, NULL), (2, 0.5);"
        "CREATE TABLE nothing ();"
        "INSERT INTO nothing DEFAULT VALUES; INSERT INTO nothing DEFAULT VALUES;"
    )
    fp = fingerprint_source(dsn)

    def int4(v: int | None) -> bytes | None:
        return None if v is None else struct.pack(">i", v)

    # Primary key: the rows themselves, in key order compared bytewise ('' < 'B' < 'a\tb' < 'b').
    k = [(b"", 0), (b"B", 1), (b"a\tb", None), (b"b", 2)]
    rows = [struct.pack(">h", 2) + _field(name) + _field(int4(n)) for name, n in k]
    header = {
        "table": "k",
        "columns": ["name", "n"],
        "types": ["text", "integer"],
        "forms": ["binary", "binary"],
        "order": "primary-key",
        "rows": "copy-binary",
    }
    assert (fp.tables["k"].digest, fp.tables["k"].rows) == (_digest(header, rows), 4)

    # No key: BLAKE2s-256 of each row's binary COPY tuple (field count, then each field's
    # length and bytes), sorted; the stream hashed is the digests one after another.
    def tuple_(x: int | None, y: float | None) -> bytes:
        yv = None if y is None else struct.pack(">d", y)
        return struct.pack(">h", 2) + _field(int4(x)) + _field(yv)

    bag = [(2, 0.5), (None, 1.0), (1, None), (2, 0.5)]
    header = {
        "table": "bag",
        "columns": ["x", "y"],
        "types": ["integer", "double precision"],
        "forms": ["binary", "float"],
        "order": "row-digests",
        "rows": "copy-binary",
    }
    bag_digest = row_digests_reference(header, [tuple_(x, y) for x, y in bag])
    assert (fp.tables["bag"].digest, fp.tables["bag"].rows) == (bag_digest, 4)

    empty = struct.pack(">h", 0)
    header = {"table": "nothing", "columns": [], "types": [], "forms": []}
    header |= {"order": "row-digests", "rows": "copy-binary"}
    assert fp.tables["nothing"].digest == row_digests_reference(header, [empty, empty])
    assert fp.tables["nothing"].rows == 2
