"""A PostgreSQL table read in key ranges on several sessions digests as one read of it.

The digest of a keyed table is BLAKE3 over its header and its one binary COPY stream in key
order (docs/postgresql.md, Fingerprint), so a table cut into key ranges must give the same
bytes in the same order. Here the cut is forced on small tables (a threshold of 0 bytes, ranges
of 8 KiB, a spool of a few hundred bytes, every first range counted as waiting), and the
result is held to a reference computed in Python from the documented bytes, to the unsplit
read, and to one snapshot while another session commits writes during the read.
"""

from __future__ import annotations

import contextlib
import secrets
import struct
import threading
from collections.abc import Iterator
from typing import Any

import blake3
import psycopg
import pytest
from psycopg import sql

from rollproof.core.canonical import canonical_json
from rollproof.engines.postgres import contents, pieces
from rollproof.engines.postgres.source import fingerprint_source
from tests.pg_fixtures import (
    MakeSource,
    Servers,
    admin,
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    row_digests_reference,
)

ROWS = 3000

KEYED = f"""
CREATE TABLE k (id bigint PRIMARY KEY, v text, f double precision);
INSERT INTO k SELECT i * 3 - 4000, CASE WHEN i % 7 = 0 THEN NULL ELSE 'r' || i END, i / 4.0
FROM generate_series(1, {ROWS}) AS i ORDER BY random();
CREATE TABLE bag (x integer, y double precision);
INSERT INTO bag SELECT i % 50, CASE WHEN i % 9 = 0 THEN NULL ELSE i % 5 END
FROM generate_series(1, {ROWS}) AS i;
"""


def _field(value: bytes | None) -> bytes:
    return struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value


def _digest(header: dict[str, object], rows: list[bytes]) -> str:
    stream = pieces.PGCOPY + b"".join(rows) + pieces.TRAILER
    return "blake3:" + blake3.blake3(canonical_json(header) + stream).hexdigest()


def _keyed_reference(values: dict[int, tuple[str | None, float]]) -> str:
    """Table k's digest from its values, straight from the documented stream."""
    rows = []
    for key in sorted(values):
        v, f = values[key]
        text = None if v is None else v.encode()
        row = _field(struct.pack(">q", key)) + _field(text) + _field(struct.pack(">d", f))
        rows.append(struct.pack(">h", 3) + row)
    header = {
        "table": "k",
        "columns": ["id", "v", "f"],
        "types": ["bigint", "text", "double precision"],
        "forms": ["binary", "binary", "float"],
        "order": "primary-key",
        "rows": "copy-binary",
    }
    return _digest(header, rows)


def _keyed_values() -> dict[int, tuple[str | None, float]]:
    return {i * 3 - 4000: (None if i % 7 == 0 else f"r{i}", i / 4.0) for i in range(1, ROWS + 1)}


def _bag_reference() -> str:
    def tuple_(x: int, y: int | None) -> bytes:
        yv = None if y is None else struct.pack(">d", float(y))
        return struct.pack(">h", 2) + _field(struct.pack(">i", x)) + _field(yv)

    bag = [(i % 50, None if i % 9 == 0 else i % 5) for i in range(1, ROWS + 1)]
    header: dict[str, object] = {
        "table": "bag",
        "columns": ["x", "y"],
        "types": ["integer", "double precision"],
        "forms": ["binary", "float"],
        "order": "row-digests",
        "rows": "copy-binary",
    }
    return row_digests_reference(header, [tuple_(x, y) for x, y in bag])


@pytest.fixture(name="forced", params=[300, 1 << 20], ids=["waits", "holds"])
def forced_fixture(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Every keyed table cut into ranges of about 8 KiB on disk (some twenty) that are shared
    among the sessions; later ranges hold only a few hundred bytes before they wait for their
    turn (so the server is held back on the socket), or hold all they read until it comes."""
    monkeypatch.setattr(contents, "SPLIT_BYTES", 0)
    monkeypatch.setattr(contents, "SERVER_BOUND", 0.0)
    monkeypatch.setattr(contents, "RANGE_BYTES", 8192)
    monkeypatch.setattr(pieces, "SPOOL_BYTES", request.param)


@pytest.mark.parametrize("jobs", [2, 3, 4])
def test_split_read_digests_as_the_reference_and_the_unsplit_read(
    pg_source: MakeSource, forced: None, jobs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = pg_source(KEYED)
    read = contents.read_range
    sessions: dict[int, set[int]] = {}
    second, lock = threading.Event(), threading.Lock()

    def counted(conn: psycopg.Connection[Any], *args: Any) -> bool:
        with lock:
            sessions.setdefault(args[2], set()).add(id(conn))
            several = len(set().union(*sessions.values())) >= 2
        if several:
            second.set()
        elif args[2] >= 1:
            # On a loaded machine the first session could read every range before another has
            # connected: a later range waits (at most 10 s) until a second session reads one.
            second.wait(10)
        return read(conn, *args)

    # Alone in its database, the keyed table's ranges are shared by every session.
    alone = pg_source(KEYED.partition("CREATE TABLE bag")[0])
    monkeypatch.setattr(contents, "read_range", counted)
    assert fingerprint_source(alone, jobs=jobs).tables["k"].digest == _keyed_reference(
        _keyed_values()
    )
    assert len(sessions) >= 10  # ranges read
    assert len(set().union(*sessions.values())) >= 2  # on more than one session
    split = fingerprint_source(dsn, jobs=jobs)
    whole = fingerprint_source(dsn, jobs=1)
    assert split == whole
    assert (split.tables["k"].digest, split.tables["k"].rows) == (
        _keyed_reference(_keyed_values()),
        ROWS,
    )
    assert (split.tables["bag"].digest, split.tables["bag"].rows) == (_bag_reference(), ROWS)


def test_ranges_of_a_client_bound_table_stay_on_one_session(
    pg_source: MakeSource, forced: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first range that never waited more than the threshold keeps the rest to itself."""
    monkeypatch.setattr(contents, "SERVER_BOUND", 2.0)
    read = contents.read_range
    sessions: set[int] = set()

    def counted(conn: psycopg.Connection[Any], *args: Any) -> bool:
        sessions.add(id(conn))
        return read(conn, *args)

    dsn = pg_source(KEYED.partition("CREATE TABLE bag")[0])
    monkeypatch.setattr(contents, "read_range", counted)
    assert fingerprint_source(dsn, jobs=2).tables["k"].digest == _keyed_reference(_keyed_values())
    assert len(sessions) == 1


def test_ranges_cover_the_key_once_and_in_order(pg_source: MakeSource) -> None:
    dsn = pg_source(
        KEYED + "CREATE TABLE one (id integer PRIMARY KEY); INSERT INTO one VALUES (5);"
    )
    with admin(dsn) as conn:
        contents.prepare_session(conn)
        plan = contents.plan_table(conn, "k", "public", "k")
        assert plan.split == 't."id"'
        for count in (2, 3, 7):
            wheres = contents.key_ranges(conn, plan, count)
            assert len(wheres) == count
            got = [
                [
                    int(r[0])
                    for r in conn.execute(f"SELECT id FROM public.k t WHERE {w} ORDER BY id")
                ]
                for w in wheres
            ]
            assert [x for part in got for x in part] == sorted(_keyed_values())
        one = contents.plan_table(conn, "one", "public", "one")
        wheres = contents.key_ranges(conn, one, 3)
        got = [
            [r[0] for r in conn.execute(f"SELECT id FROM public.one t WHERE {w}")] for w in wheres
        ]
        assert got == [[], [], [5]]
        bag = contents.plan_table(conn, "bag", "public", "bag")
        assert bag.split is None  # no key: never cut into ranges


@pytest.mark.parametrize(("first", "last"), [(True, True), (True, False), (False, True)])
def test_framing_keeps_one_header_and_one_trailer(first: bool, last: bool) -> None:
    body = struct.pack(">h", 1) + _field(b"x" * 10)
    stream = pieces.PGCOPY + body + body + pieces.TRAILER
    for step in (1, 2, 7, len(stream)):  # however the batches fall
        out: list[bytes] = []
        framing = pieces.Framing("t", first, last, lambda b, o=out: o.append(bytes(b)))
        for i in range(0, len(stream), step):
            framing(bytearray(stream[i : i + step]))
        framing.close()
        kept = (pieces.PGCOPY if first else b"") + body + body + (pieces.TRAILER if last else b"")
        assert b"".join(out) == kept


def test_framing_refuses_a_stream_without_its_header_or_trailer() -> None:
    framing = pieces.Framing("t", True, True, lambda b: None)
    with pytest.raises(psycopg.OperationalError, match=r"^table t: COPY sent no binary header$"):
        framing(bytearray(b"PGCOPY\n\xff\r\n\x01"))
    framing = pieces.Framing("t", False, True, lambda b: None)
    framing(bytearray(pieces.PGCOPY + struct.pack(">h", 0)))
    with pytest.raises(psycopg.OperationalError, match=r"^table t: binary COPY ended early$"):
        framing.close()


def test_ranges_hash_in_order_whatever_order_they_arrive_in() -> None:
    """Later ranges finish first, one spools past its limit and waits: same bytes hashed."""
    parts = [b"a" * 1000, b"b" * 10, b"c" * 700]
    for spool in (5, 10_000):
        h = blake3.blake3()
        stream = pieces.OrderedStream(h, 3)
        old, pieces.SPOOL_BYTES = pieces.SPOOL_BYTES, spool
        try:
            done: list[int] = []

            def feed(i: int, s: pieces.OrderedStream = stream, d: list[int] = done) -> None:
                for k in range(0, len(parts[i]), 100):
                    s.put(i, parts[i][k : k + 100])
                s.finish(i, 1)
                d.append(i)

            threads = [threading.Thread(target=feed, args=(i,)) for i in (2, 1)]
            for t in threads:
                t.start()
            feed(0)
            for t in threads:
                t.join(timeout=10)
            assert sorted(done) == [0, 1, 2]
        finally:
            pieces.SPOOL_BYTES = old
        assert stream.digest() == blake3.blake3(b"".join(parts)).hexdigest()
        assert stream.rows == 3


def test_a_range_whose_turn_comes_mid_read_hashes_what_it_held_first() -> None:
    stream = pieces.OrderedStream(blake3.blake3(), 2)
    stream.put(1, b"held ")  # under the limit: held, not waited on
    stream.put(0, b"first ")
    assert stream.finish(0, 1) is False
    stream.put(1, b"then")  # its turn now: what it held goes first
    assert stream.finish(1, 1) is True
    assert stream.digest() == blake3.blake3(b"first held then").hexdigest()


def test_an_abandoned_table_wakes_its_waiting_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pieces, "SPOOL_BYTES", 10)
    stream = pieces.OrderedStream(blake3.blake3(), 2)
    errors: list[BaseException] = []

    def later() -> None:
        try:
            stream.put(1, b"x" * 100)  # over the limit before its turn: waits
        except pieces.Aborted as e:
            errors.append(e)

    t = threading.Thread(target=later)
    t.start()
    t.join(timeout=0.2)
    assert t.is_alive()
    stream.abort()
    t.join(timeout=10)
    assert not t.is_alive()
    assert [str(e) for e in errors] == ["another range of this table failed"]


@pytest.fixture(name="live_db")
def live_db_fixture(pg_servers: Servers) -> Iterator[str]:
    """A database others write while it is fingerprinted (so not pg_source, which checks that
    its databases never change)."""
    name = f"rp_test_{secrets.token_hex(4)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_servers.source_db(name)
    finally:
        with admin(pg_servers.source) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_writer_during_a_split_read_is_not_seen_mid_read(live_db: str, forced: None) -> None:
    """Each commit sets the lowest and the highest key's text to the same counter: a read that
    mixed two instants would hold two counters and match no state the table was ever in."""
    with admin(live_db) as conn:
        conn.execute(KEYED.encode())
    values = _keyed_values()
    low, high = min(values), max(values)
    stop = threading.Event()
    committed: list[int] = []

    def write() -> None:
        with admin(live_db) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute("UPDATE k SET v = %s WHERE id IN (%s, %s)", (f"w{n}", low, high))
                committed.append(n)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        with contextlib.suppress(Exception):
            while not committed:
                stop.wait(0.01)
        seen = [fingerprint_source(live_db, jobs=2).tables["k"] for _ in range(3)]
    finally:
        stop.set()
        writer.join(timeout=30)
    assert len(committed) > 3
    states = {}
    for n in [0, *committed]:
        state = dict(values)
        if n:
            state[low] = (f"w{n}", values[low][1])
            state[high] = (f"w{n}", values[high][1])
        states[_keyed_reference(state)] = n
    for digest in seen:
        assert digest.rows == ROWS
        assert digest.digest in states, "the split read mixed two instants"
