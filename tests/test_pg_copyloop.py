"""The PostgreSQL fingerprint's COPY loop in C (csrc/pgcopy.c, copyloop.py) against Python's.

The C reader takes libpq's CopyData messages through the libpq psycopg uses, and for a table
without a key digests each row with BLAKE2s-256 (eight rows at a time with AVX2, rows of one
to four blocks; longer rows alone). Every digest here is held three ways: C, the Python loop
(`ROLLPROOF_PG_COPY_LOOP=python`), and a reference built from the documented bytes. Framing
faults, server errors, waits and interruptions leave the session usable on both paths.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rollproof.engines import rowdigests
from rollproof.engines.postgres import copyloop
from rollproof.engines.postgres.source import fingerprint_source
from tests.pg_fixtures import (
    MakeSource,
    admin,
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    row_digests_reference,
)

pgcopy = pytest.importorskip("rollproof.engines.postgres._pgcopy")

WIDTHS = list(range(0, 301))
"""Text lengths of the `widths` table: rows of one to five and more BLAKE2s blocks, every
length at each block edge included (a row is 2 + 4 + 4 + length bytes)."""

SHAPES = f"""
CREATE TABLE widths (n integer, v text);
INSERT INTO widths SELECT w, repeat('x', w) FROM unnest(ARRAY{WIDTHS}) AS w;
INSERT INTO widths SELECT w, repeat('y', w) FROM unnest(ARRAY{WIDTHS}) AS w WHERE w % 3 = 0;
INSERT INTO widths VALUES (NULL, NULL), (NULL, NULL), (7, NULL);
CREATE TABLE keyed (id bigint PRIMARY KEY, v text, f double precision, b bytea);
INSERT INTO keyed SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE repeat('k', i % 400) END,
  i / 3.0, decode(repeat('ab', i % 50), 'hex') FROM generate_series(1, 2000) AS i;
CREATE TABLE bag (x integer, y double precision, z jsonb);
INSERT INTO bag SELECT i % 40, CASE WHEN i % 9 = 0 THEN NULL ELSE i % 5 END,
  jsonb_build_object('a', i % 7, 'b', repeat('z', i % 90))
FROM generate_series(1, 5000) AS i;
CREATE TABLE nothing ();
INSERT INTO nothing DEFAULT VALUES; INSERT INTO nothing DEFAULT VALUES;
CREATE TABLE empty (a integer, b text);
"""


@pytest.fixture(name="python_loop")
def python_loop_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The Python loop for the test (the C reader's discovery is cached per process)."""
    monkeypatch.setenv("ROLLPROOF_PG_COPY_LOOP", "python")
    copyloop._functions.cache_clear()
    assert not copyloop.available()
    yield
    monkeypatch.delenv("ROLLPROOF_PG_COPY_LOOP")
    copyloop._functions.cache_clear()


def _c_loop() -> None:
    copyloop._functions.cache_clear()
    assert copyloop.available(), "the C reader must be usable where _pgcopy is built"


def _widths_reference() -> str:
    def field(value: bytes | None) -> bytes:
        return struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value

    values: list[tuple[int | None, bytes | None]] = [(w, b"x" * w) for w in WIDTHS]
    values += [(w, b"y" * w) for w in WIDTHS if w % 3 == 0]
    values += [(None, None), (None, None), (7, None)]
    tuples = [
        struct.pack(">h", 2) + field(None if n is None else struct.pack(">i", n)) + field(v)
        for n, v in values
    ]
    header: dict[str, object] = {
        "table": "widths",
        "columns": ["n", "v"],
        "types": ["integer", "text"],
        "forms": ["binary", "binary"],
        "order": "row-digests",
        "rows": "copy-binary",
    }
    return row_digests_reference(header, tuples)


def test_c_reader_python_loop_and_reference_agree(
    pg_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = pg_source(SHAPES)
    _c_loop()
    in_c = fingerprint_source(dsn)
    monkeypatch.setenv("ROLLPROOF_PG_COPY_LOOP", "python")
    copyloop._functions.cache_clear()
    in_python = fingerprint_source(dsn)
    monkeypatch.delenv("ROLLPROOF_PG_COPY_LOOP")
    copyloop._functions.cache_clear()
    assert in_c == in_python
    assert in_c.tables["widths"].digest == _widths_reference()
    assert in_c.tables["widths"].rows == len(WIDTHS) + len(WIDTHS[::3]) + 3
    assert {name: t.rows for name, t in in_c.tables.items() if name != "widths"} == {
        "keyed": 2000,
        "bag": 5000,
        "nothing": 2,
        "empty": 0,
    }
    assert in_c.tables["bag"].order == "row-digests"
    # One value changed in the longest row: the digest changes.
    changed = pg_source(SHAPES + "UPDATE widths SET v = repeat('x', 299) || 'z' WHERE n = 300;")
    _c_loop()
    assert fingerprint_source(changed).tables["widths"].digest != in_c.tables["widths"].digest


@pytest.mark.parametrize("loop", ["c", "python"])
@pytest.mark.parametrize(
    ("statement", "columns", "error"),
    [
        (
            "COPY (SELECT 1, 2) TO STDOUT (FORMAT binary)",
            3,
            "binary COPY: COPY sent a row that is not framed as the table's columns",
        ),
        (
            "COPY (SELECT 1) TO STDOUT",
            1,
            "binary COPY: COPY sent no binary header",
        ),
    ],
    ids=["columns", "text-format"],
)
def test_a_stream_that_does_not_decode_is_refused(
    pg_source: MakeSource,
    monkeypatch: pytest.MonkeyPatch,
    loop: str,
    statement: str,
    columns: int,
    error: str,
) -> None:
    dsn = pg_source("")
    if loop == "python":
        monkeypatch.setenv("ROLLPROOF_PG_COPY_LOOP", "python")
    copyloop._functions.cache_clear()
    try:
        assert copyloop.available() == (loop == "c")
        with admin(dsn) as conn, rowdigests.SortedRuns() as runs:
            with pytest.raises(psycopg.OperationalError) as caught:
                copyloop.copy_row_digests(conn, statement, columns, runs)
            assert str(caught.value) == error
            assert conn.execute("SELECT 41 + 1").fetchone() == (42,)  # still usable
            # Its positive twin: the right column count reads.
            good = "COPY (SELECT 1, 2) TO STDOUT (FORMAT binary)"
            assert copyloop.copy_row_digests(conn, good, 2, runs) == 1
    finally:
        monkeypatch.delenv("ROLLPROOF_PG_COPY_LOOP", raising=False)
        copyloop._functions.cache_clear()


@pytest.mark.parametrize("loop", ["c", "python"])
def test_server_errors_waits_and_interruptions(
    pg_source: MakeSource, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    dsn = pg_source("")
    if loop == "python":
        monkeypatch.setenv("ROLLPROOF_PG_COPY_LOOP", "python")
    copyloop._functions.cache_clear()
    try:
        with admin(dsn) as conn:
            # A server error in the middle of the rows: the server's own error, session usable.
            failing = "COPY (SELECT 1 / (i - 300) FROM generate_series(1, 400) i) TO STDOUT"
            with pytest.raises(psycopg.errors.DivisionByZero):
                copyloop.copy_out(conn, failing, lambda b: None)
            assert conn.execute("SELECT 1").fetchone() == (1,)
            # A slow server: the C reader hands back control every TIMEOUT_MS while it waits.
            # (Rows larger than the server's 8 KiB send buffer, so each is sent on its own.)
            got = bytearray()
            waits: list[float] = []
            slow = (
                "COPY (SELECT pg_sleep(0.25), repeat('w', 20000) FROM generate_series(1, 4))"
                " TO STDOUT"
            )
            assert copyloop.copy_out(conn, slow, got.extend, waits) == 4
            assert bytes(got) == (b"\t" + b"w" * 20000 + b"\n") * 4
            assert sum(waits) >= 0.5
            # The caller stops mid-COPY (an exception in the sink): cancelled, session usable.
            big = "COPY (SELECT i, repeat('q', 500) FROM generate_series(1, 200000) i) TO STDOUT"

            class Stop(Exception):
                pass

            def stop(_: memoryview) -> None:
                raise Stop

            with pytest.raises(Stop):
                copyloop.copy_out(conn, big, stop)
            assert conn.execute("SELECT 2").fetchone() == (2,)
    finally:
        monkeypatch.delenv("ROLLPROOF_PG_COPY_LOOP", raising=False)
        copyloop._functions.cache_clear()


def test_the_reader_refuses_functions_that_do_not_see_the_connection(
    pg_source: MakeSource,
) -> None:
    dsn = pg_source("")
    _c_loop()
    functions = copyloop._functions()
    assert functions is not None
    with admin(dsn) as conn:
        pgconn: Any = conn.pgconn
        assert copyloop.reader(conn) is not None
        with pytest.raises(ValueError, match="do not see this connection") as caught:
            pgcopy.Reader(pgconn.pgconn_ptr, functions, pgconn.socket, pgconn.backend_pid + 1)
        assert str(caught.value) == (
            "Reader: these libpq functions do not see this connection as psycopg does"
        )
        with pytest.raises(ValueError, match="a null connection or function"):
            pgcopy.Reader(pgconn.pgconn_ptr, (0, *functions[1:]), pgconn.socket, 1)


def test_row_digests_spill_and_merge_as_held_in_memory(
    pg_source: MakeSource, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dsn = pg_source(SHAPES)
    _c_loop()
    whole = fingerprint_source(dsn)
    spilled: list[int] = []
    spill = rowdigests.SortedRuns._spill

    def counted(self: rowdigests.SortedRuns) -> None:
        spilled.append(len(self.runs))
        spill(self)

    # Runs of 64 digests, the C reader's buffer starting at 8 digests (it doubles, then a run
    # is sorted and kept; past the limit the runs go to files): many runs, several spills.
    monkeypatch.setattr(rowdigests, "RUN_DIGESTS", 64)
    monkeypatch.setattr(copyloop, "DIGEST_BUFFER", 8 * 32)
    monkeypatch.setattr(rowdigests.SortedRuns, "_spill", counted)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    again = fingerprint_source(dsn)
    assert again == whole
    assert len(spilled) > 10
    assert not list(tmp_path.glob(f"{rowdigests.SPILL_PREFIX}*"))  # every spill removed


@pytest.mark.parametrize("x8", [True, False], ids=["eight-lanes", "alone"])
def test_blake2s_at_every_length_is_hashlibs(x8: bool) -> None:
    for n in range(0, 300):
        data = os.urandom(n)
        assert pgcopy.blake2s(data, x8) == hashlib.blake2s(data).digest(), n
