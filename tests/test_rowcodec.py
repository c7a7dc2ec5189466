"""The SQLite fingerprint's C accelerator (`rowcodec`, csrc/rowcodec.c) against the Python path
and the documented definition, on real SQLite files: the same bytes for every value class, the
same table digests for every table shape (pieces, segments and chunks crossed), BLAKE2s as
hashlib computes it, a silent fallback wherever the extension cannot read a piece, and functions
that a database's own views and triggers cannot call."""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollproof.core import canonical
from rollproof.core.canonical import (
    SqlValue,
    canonical_json,
    encode_rows_reference,
    row_digest,
    table_digest_reference,
)
from rollproof.engines.sqlite import fingerprint as sqlite_fingerprint
from rollproof.engines.sqlite import rowcodec
from rollproof.engines.sqlite.source import connect_read_only, fingerprint_file

Row = tuple[SqlValue, ...]
BUILT = rowcodec.extension_path() is not None
needs_extension = pytest.mark.skipif(
    not BUILT, reason="the C accelerator is not built in this install (no C compiler at install)"
)


def test_the_extension_is_built_where_a_compiler_is() -> None:
    """A broken build must not pass for a missing compiler: where one is (or in CI), the
    extension exists and loads."""
    if not (os.environ.get("CI") or shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here, so an install has no extension to build")
    assert BUILT, "a C compiler is available but the extension was not built"
    conn = apsw.Connection(":memory:")
    assert rowcodec.load(conn)
    assert conn.execute("SELECT rollproof_rows(1)").fetchone() == (
        b"(\x01\x00\x00\x00i\x01\x00\x00\x00",
    )


def _codec() -> apsw.Connection:
    """An in-memory connection with the extension loaded."""
    if not BUILT:
        pytest.skip("the C accelerator is not built in this install (no C compiler at install)")
    conn = apsw.Connection(":memory:")
    assert rowcodec.load(conn)
    return conn


@pytest.fixture
def codec() -> Iterator[apsw.Connection]:
    with contextlib.closing(_codec()) as conn:
        yield conn


# -- values -----------------------------------------------------------------------------------

INTS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from(
        [0, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**45, 2**60, -(2**63), 2**63 - 1]
    ),
)
REALS = st.one_of(
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, float("inf"), float("-inf"), 5e-324, -2.2e-308, 1.0, 0.1]),
)
TEXTS = st.one_of(st.text(), st.sampled_from(["", "é", "\U0001f600", "a\x00b", "\uffff"]))
BLOBS = st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\x00", b"\xff" * 64]))
# stored TEXT that is not valid UTF-8, inserted as CAST(blob AS TEXT)
BAD_TEXTS = st.binary(min_size=1, max_size=40).filter(lambda b: not _valid_utf8(b))
VALUES = st.one_of(st.none(), INTS, REALS, TEXTS, BLOBS, BAD_TEXTS.map(lambda b: ("bad", b)))


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _insert(conn: apsw.Connection, table: str, rows: list[tuple[object, ...]]) -> None:
    """Insert rows whose ("bad", bytes) values are stored as TEXT holding those bytes."""
    for row in rows:
        marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, tuple) else "?" for v in row)
        values = [v[1] if isinstance(v, tuple) else v for v in row]
        conn.execute(f"INSERT INTO {table} VALUES ({marks})", values)


def _as_python(v: object) -> SqlValue:
    """The value the lenient Python reader sees for what `_insert` stored."""
    if isinstance(v, tuple):
        return bytes(v[1]).decode("utf-8", "surrogateescape")
    return v  # type: ignore[return-value]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(VALUES, min_size=1, max_size=6), min_size=1, max_size=8))
def test_rows_and_row_digests_are_the_python_bytes(rows: list[list[object]]) -> None:
    width = max(len(r) for r in rows)
    padded = [tuple(r) + (None,) * (width - len(r)) for r in rows]
    conn = _codec()
    cols = ", ".join(f"c{i}" for i in range(width))
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {cols})")
    _insert(conn, "t", [(i, *r) for i, r in enumerate(padded)])
    expected = [tuple(_as_python(v) for v in r) for r in padded]
    source = f"(SELECT {cols} FROM t ORDER BY id)"
    encoded, digests = conn.execute(
        f"SELECT rollproof_rows({cols}), rollproof_row_digests({cols}) FROM {source}"
    ).fetchone()  # type: ignore[misc]
    assert encoded == encode_rows_reference(expected)
    assert digests == b"".join(row_digest(r) for r in expected)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=80)
    | st.lists(
        st.sampled_from(
            [0x41, 0x80, 0xBF, 0xC2, 0xE0, 0xED, 0xF0, 0xF4, 0xF5, 0xFF, 0xA0, 0x90, 0x8F]
        ),
        max_size=12,
    ).map(bytes)
)
def test_text_is_written_as_python_decodes_it(data: bytes) -> None:
    """Valid UTF-8 byte for byte; every other byte as its surrogateescape code point, written
    with surrogatepass, exactly as marshal writes the string Python's lenient reader makes."""
    with contextlib.closing(_codec()) as codec:
        (got,) = codec.execute("SELECT rollproof_rows(CAST(? AS TEXT))", (data,)).fetchone()  # type: ignore[misc]
    assert got == marshal.dumps((data.decode("utf-8", "surrogateescape"),), 2)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_blake2s_is_hashlibs(data: bytes) -> None:
    with contextlib.closing(_codec()) as codec:
        (got,) = codec.execute("SELECT rollproof_row_digests(?)", (data,)).fetchone()  # type: ignore[misc]
    assert got == hashlib.blake2s(marshal.dumps((data,), 2)).digest()


def test_blake2s_across_block_boundaries(codec: apsw.Connection) -> None:
    # a one-blob row's encoding is 10 bytes longer than the blob: every length 0..200 crosses
    # the 64-byte block boundaries at every offset
    blobs = [bytes(range(n % 256)) * (n // 256 + 1) for n in range(200)]
    for blob in blobs:
        (got,) = codec.execute("SELECT rollproof_row_digests(?)", (blob,)).fetchone()  # type: ignore[misc]
        assert (
            got
            == hashlib.blake2s(
                b"(\x01\x00\x00\x00s" + len(blob).to_bytes(4, "little") + blob
            ).digest()
        )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 120), max_size=40))
def test_row_digests_in_eights_and_alone_are_hashlibs(sizes: list[int]) -> None:
    """Rows of every encoded length around one block (10 to 130 bytes: up to 64 they are hashed
    eight at once where the CPU has AVX2, longer ones alone), any number of them (a last group
    of fewer than eight is hashed at the end), each digest in its row's place."""
    blobs = [bytes((i * 7 + j) % 256 for j in range(n)) for i, n in enumerate(sizes)]
    with contextlib.closing(_codec()) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b)")
        conn.executemany("INSERT INTO t (b) VALUES (?)", [(b,) for b in blobs])
        (got,) = conn.execute(
            "SELECT rollproof_row_digests(b) FROM (SELECT b FROM t ORDER BY id)"
        ).fetchone()  # type: ignore[misc]
    expected = b"".join(hashlib.blake2s(marshal.dumps((b,), 2)).digest() for b in blobs)
    assert got == expected


def test_row_digests_at_the_one_block_edge(codec: apsw.Connection) -> None:
    """Encodings of exactly 63, 64 and 65 bytes (a blob row is 10 bytes more than the blob),
    mixed so that groups of eight straddle both paths, in a table read in chunks."""
    blobs = [b"\xa5" * n for n in [53, 54, 55] * 11 + [0] * 9]
    codec.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b)")
    codec.executemany("INSERT INTO t (b) VALUES (?)", [(b,) for b in blobs])
    expected = [hashlib.blake2s(marshal.dumps((b,), 2)).digest() for b in blobs]
    for size in (1, 7, 8, 9, 42):
        got = b"".join(
            codec.execute(
                "SELECT rollproof_row_digests(b) FROM t WHERE id > ? AND id <= ?",
                (start, start + size),
            ).fetchone()[0]  # type: ignore[index]
            for start in range(0, len(blobs), size)
        )
        assert got == b"".join(expected)


def test_rows_after_takes_rows_in_increasing_rowid_order_only(codec: apsw.Connection) -> None:
    """rollproof_rows_after encodes what rollproof_rows does, and refuses a row whose rowid is
    not above the row's before (the order a scan without ORDER BY is relied on for)."""
    codec.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    codec.executemany("INSERT INTO t VALUES (?, ?)", [(i * 3 - 4, f"v{i}") for i in range(9)])
    (after,) = codec.execute("SELECT rollproof_rows_after(id, id, v) FROM t").fetchone()  # type: ignore[misc]
    (ordered,) = codec.execute(
        "SELECT rollproof_rows(id, v) FROM (SELECT id, v FROM t ORDER BY id)"
    ).fetchone()  # type: ignore[misc]
    assert after == ordered
    out_of_order = r"^rollproof_rows_after: rows out of rowid order$"
    with pytest.raises(apsw.SQLError, match=out_of_order):
        codec.execute(
            "SELECT rollproof_rows_after(id, v) FROM (SELECT id, v FROM t ORDER BY id DESC)"
        ).fetchall()
    with pytest.raises(apsw.SQLError, match=out_of_order):
        codec.execute("SELECT rollproof_rows_after(1, v) FROM t").fetchall()  # a tie
    with pytest.raises(apsw.SQLError, match=r"^rollproof_rows_after: the first argument is not"):
        codec.execute("SELECT rollproof_rows_after(CAST(id AS TEXT), v) FROM t").fetchall()


KEY_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False).map(lambda f: f + 0.0),
    st.text(max_size=6),
    st.binary(max_size=6),
)


def _outcome(conn: apsw.Connection, sql: str) -> object:
    """The query's one value, or its error's message."""
    try:
        return conn.execute(sql).fetchone()[0]  # type: ignore[index]
    except apsw.SQLError as e:
        return str(e)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(KEY_VALUES, KEY_VALUES), min_size=2, max_size=30, unique=True),
    st.booleans(),
)
def test_rows_keyed_orders_keys_as_sqlite_does(
    keys: list[tuple[object, object]], wide: bool
) -> None:
    """rollproof_rows_keyed takes rows in SQLite's key order (a WITHOUT ROWID table's ORDER
    BY, BINARY collation, one or two key columns, every storage class) and encodes what
    rollproof_rows does, or refuses an INTEGER beside a REAL in one key column; the reverse
    order is always refused."""
    with contextlib.closing(_codec()) as conn:
        cols = "a, b" if wide else "a"
        conn.execute(f"CREATE TABLE t (a, b, v, PRIMARY KEY ({cols})) WITHOUT ROWID")
        for i, (a, b) in enumerate(keys):
            conn.execute("INSERT OR IGNORE INTO t VALUES (?, ?, ?)", (a, b if wide else i, i))
        m = 2 if wide else 1
        ordered = f"(SELECT {cols}, v FROM t ORDER BY {cols})"
        (plain,) = conn.execute(f"SELECT rollproof_rows(v) FROM {ordered}").fetchone()  # type: ignore[misc]
        got = _outcome(conn, f"SELECT rollproof_rows_keyed({m}, {cols}, v) FROM {ordered}")
        mixed = any(
            conn.execute(
                f"SELECT count(DISTINCT typeof({c})) FROM t WHERE typeof({c}) IN ('integer', 'real')"
            ).fetchone()[0]  # type: ignore[index]
            == 2
            for c in cols.split(", ")
        )
        refused = "rollproof_rows_keyed: an INTEGER and a REAL in one key column"
        assert got == plain or (mixed and got == refused)
        backwards = (
            f"(SELECT {cols}, v FROM t ORDER BY {', '.join(c + ' DESC' for c in cols.split(', '))})"
        )
        if conn.execute("SELECT count(*) FROM t").fetchone()[0] > 1:  # type: ignore[index]
            with pytest.raises(
                apsw.SQLError,
                match=r"rollproof_rows_keyed: (rows out of key order|an INTEGER and a REAL)",
            ):
                conn.execute(
                    f"SELECT rollproof_rows_keyed({m}, {cols}, v) FROM {backwards}"
                ).fetchall()


@needs_extension
def test_a_without_rowid_piece_is_read_by_key_ranges(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WITHOUT ROWID table whose key collates BINARY is read by key ranges to its end (to the
    same pieces as Python's), one collating NOCASE by keyset paging."""
    used: list[str] = []
    real = rowcodec.ranged_keyed_chunks

    def spy(conn, table, *args):  # type: ignore[no-untyped-def]
        yield from real(conn, table, *args)
        used.append(table)  # read to the end, nothing refused

    monkeypatch.setattr(rowcodec, "ranged_keyed_chunks", spy)
    db = _build(tmp_path / "a.db", 500, {n: SHAPES[n] for n in ("wr", "nc")})
    for piece in _pieces(db, ("wr", "nc"), 4):
        fast, slow = _read_both(db, piece)
        assert fast == slow
    assert set(used) == {"wr"}


@needs_extension
def test_a_scan_that_comes_in_reverse_is_refused_not_misread(tmp_path: Path, small: None) -> None:
    """With PRAGMA reverse_unordered_selects a plain scan meets the rows in descending rowid
    order: a rowid-keyed piece is then declined (and read by Python), a WITHOUT ROWID one read
    by keyset paging instead of key ranges, never encoded out of key order; a key-less piece,
    whose digests are a multiset, reads the same either way."""
    db = _build(tmp_path / "a.db", 300, {n: SHAPES[n] for n in ("k", "n", "wr")})
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    for piece in _pieces(db, ("k", "n", "wr"), 2):
        fast, slow = _read_both(db, piece)
        assert fast == slow
        conn = apsw.Connection(f"file:{db}?mode=ro", flags=flags)
        with contextlib.closing(conn):
            conn.execute("PRAGMA reverse_unordered_selects = ON")
            conn.execute("BEGIN")
            reversed_read = sqlite_fingerprint._read_accelerated(conn, piece, None)
        with contextlib.closing(connect_read_only(db, functions=True)) as host:
            host.execute("PRAGMA reverse_unordered_selects = ON")
            host.execute("BEGIN")
            assert sqlite_fingerprint._read_accelerated(host, piece, None) == reversed_read
        if piece.plan.key is None or piece.plan.without_rowid:
            assert reversed_read == slow
        else:
            assert reversed_read is None


def test_no_rows_give_empty_results(codec: apsw.Connection) -> None:
    codec.execute("CREATE TABLE t (a)")
    assert codec.execute(
        "SELECT count(*), rollproof_rows(a), rollproof_row_digests(a), rollproof_last(a) FROM t"
    ).fetchone() == (0, b"", b"", b"")


def test_the_last_row_is_refused_for_text_it_could_not_bind_again(codec: apsw.Connection) -> None:
    assert marshal.loads(codec.execute("SELECT rollproof_last(1, 'é', x'00')").fetchone()[0]) == (
        1,
        "é",
        b"\x00",
    )  # type: ignore[index]
    with pytest.raises(apsw.SQLError, match=r"^rollproof_last: text is not valid UTF-8$"):
        codec.execute("SELECT rollproof_last(CAST(x'ff' AS TEXT))").fetchone()


@pytest.mark.parametrize(
    "function",
    ["rollproof_rows", "rollproof_rows_after", "rollproof_row_digests", "rollproof_last"],
)
def test_views_and_triggers_cannot_call_the_functions(
    codec: apsw.Connection, function: str
) -> None:
    """DIRECTONLY: a database's own schema cannot make the fingerprint worker run them."""
    codec.execute("CREATE TABLE t (a); CREATE TABLE log (b)")
    codec.execute(f"CREATE VIEW v AS SELECT {function}(a) FROM t")
    codec.execute(
        f"CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log SELECT {function}(new.a); END"
    )
    unsafe = rf"^unsafe use of {function}\(\)$"
    with pytest.raises(apsw.SQLError, match=unsafe):
        codec.execute("SELECT * FROM v").fetchall()
    with pytest.raises(apsw.SQLError, match=unsafe):
        codec.execute("INSERT INTO t VALUES (1)")
    assert codec.execute("SELECT count(*) FROM log").fetchone() == (0,)
    # the same call written directly is allowed
    assert codec.execute(f"SELECT {function}(a) FROM t").fetchone() == (b"",)


# -- sorting and merging row digests ----------------------------------------------------------

# Digests drawn so that the C sort meets every case: random ones (buckets of one), many sharing
# their first two bytes (one bucket that may pass the insertion-sort size, 96), a few
# sharing them (insertion sort), prefixes that differ only past byte 2, and repeats.
DIGEST_LISTS = st.lists(
    st.one_of(
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=30, max_size=30).map(lambda b: b"\x00\x01" + b),
        st.binary(min_size=1, max_size=1).map(lambda b: b"\xff\xfe" + b * 30),
        st.sampled_from([b"\x00" * 32, b"\xff" * 32, b"\x00" * 31 + b"\x01"]),
    ),
    max_size=200,
)


def _digests_module() -> Any:
    module = rowcodec.digest_module()
    if module is None:
        pytest.skip("the C digest sorter is not built in this install (no C compiler at install)")
    return module


def _merge(module: Any, runs: list[Any], block: int) -> tuple[bytes, list[int]]:
    """What merge hands on, and the sizes of the blocks it handed on."""
    out: list[bytes] = []
    count = module.merge(runs, out.append, block)
    assert count * 32 == sum(map(len, out))
    return b"".join(out), [len(b) // 32 for b in out]


@settings(max_examples=300, deadline=None)
@given(DIGEST_LISTS, st.integers(1, 5), st.integers(1, 9))
def test_digests_sort_and_merge_as_bytes_sort(digests: list[bytes], parts: int, block: int) -> None:
    """The C sort and merge give exactly Python's bytewise order (the order numpy's sort of
    32-byte strings gives, which the fallback uses and the digest is defined by)."""
    module = _digests_module()
    expected = b"".join(sorted(digests))
    buf = bytearray(b"".join(digests))
    assert module.sort(buf) is None
    assert bytes(buf) == expected
    runs = [b"".join(sorted(digests[i::parts])) for i in range(parts)]
    merged, blocks = _merge(module, runs, block)
    assert merged == expected
    assert all(b == block for b in blocks[:-1])
    assert not blocks or 1 <= blocks[-1] <= block
    import numpy as np

    as_numpy = bytearray(b"".join(digests))
    np.frombuffer(as_numpy, dtype="S32").sort()
    assert bytes(as_numpy) == expected


def test_a_bucket_larger_than_the_insertion_sort_is_sorted() -> None:
    """Thousands of digests in one first-two-bytes bucket (qsort there), and 65,536 buckets;
    merged from 300 runs (a heap of their heads)."""
    module = _digests_module()
    rng = __import__("random").Random(7)
    same = [b"\x12\x34" + rng.randbytes(30) for _ in range(3000)]
    spread = [i.to_bytes(2, "big") + rng.randbytes(30) for i in range(65536)]
    digests = same + spread + same[:10]
    rng.shuffle(digests)
    buf = bytearray(b"".join(digests))
    module.sort(buf)
    assert bytes(buf) == b"".join(sorted(digests))
    runs = [b"".join(sorted(digests[i::300])) for i in range(300)]
    assert _merge(module, runs, 1000)[0] == bytes(buf)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: m.sort(bytearray(33)), ValueError, r"^sort: length is not a multiple of 32$"),
        (lambda m: m.sort(b"x" * 32), BufferError, r"^Object is not writable\.$"),
        (lambda m: m.sort("a" * 32), TypeError, "bytes-like"),
        (
            lambda m: m.merge([b"", b"y" * 31], print, 4),
            ValueError,
            r"^merge: length is not a multiple of 32$",
        ),
        (
            lambda m: m.merge([b"\x01" * 32 + b"\x00" * 32], print, 4),
            ValueError,
            r"^merge: run 0 is not sorted$",
        ),
        (lambda m: m.merge([b""], print, 0), ValueError, r"^merge: block must be at least 1$"),
        (lambda m: m.merge(7, print, 4), TypeError, r"^merge: runs must be a sequence$"),
    ],
    ids=[
        "sort-length",
        "sort-read-only",
        "sort-text",
        "merge-length",
        "merge-unsorted",
        "merge-block",
        "merge-not-a-sequence",
    ],
)
def test_the_digest_functions_refuse_what_is_not_digests(
    call: Any, error: type[Exception], message: str
) -> None:
    module = _digests_module()
    with pytest.raises(error, match=message):
        call(module)


def test_the_digest_functions_of_nothing_are_empty() -> None:
    module = _digests_module()
    empty = bytearray()
    module.sort(empty)
    assert empty == b""
    assert _merge(module, [b"", b""], 4) == (b"", [])
    assert _merge(module, [], 4) == (b"", [])


def test_a_merge_whose_update_fails_or_keeps_the_blocks() -> None:
    """The error of `update` is the merge's, raised at once; blocks `update` keeps stay what
    they were handed as (each is a bytes object of its own, never reused)."""
    module = _digests_module()
    runs = [b"\x00" * 32 + b"\x02" * 32, b"\x01" * 32]
    calls: list[bytes] = []

    def fails(block: bytes) -> None:
        calls.append(block)
        raise OSError("disk full")

    with pytest.raises(OSError, match=r"^disk full$"):
        module.merge(runs, fails, 1)
    assert calls == [b"\x00" * 32]
    kept: list[bytes] = []
    assert module.merge(runs, kept.append, 2) == 3
    assert kept == [b"\x00" * 32 + b"\x01" * 32, b"\x02" * 32]
    assert all(type(block) is bytes for block in kept)


@needs_extension
def test_key_less_digests_are_the_same_sorted_in_c_or_by_numpy(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key-less table spilling runs, read in process and by workers: the C sort and merge
    give the table digest numpy's sort gives."""
    db = _build(tmp_path / "a.db", 700, {"n": SHAPES["n"]})
    reference = _reference(db, ["n"])
    for threshold in (0, 1 << 62):  # workers (each sorts its pieces, the parent merges); in process
        monkeypatch.setattr(sqlite_fingerprint, "PARALLEL_MIN_BYTES", threshold)
        assert _digests(db) == reference
    monkeypatch.setattr(rowcodec, "digest_module", lambda: None)
    for threshold in (0, 1 << 62):
        monkeypatch.setattr(sqlite_fingerprint, "PARALLEL_MIN_BYTES", threshold)
        assert _digests(db) == reference


# -- tables -----------------------------------------------------------------------------------

SHAPES = {
    "k": "CREATE TABLE k (id INTEGER PRIMARY KEY, v, w TEXT)",
    "kd": "CREATE TABLE kd (id INTEGER NOT NULL PRIMARY KEY DESC, v)",
    "c": "CREATE TABLE c (a TEXT NOT NULL, b TEXT NOT NULL, v, PRIMARY KEY (a, b))",
    "wr": "CREATE TABLE wr (k TEXT PRIMARY KEY, v, w) WITHOUT ROWID",
    "nc": "CREATE TABLE nc (k TEXT COLLATE NOCASE PRIMARY KEY, v) WITHOUT ROWID",
    "n": "CREATE TABLE n (a, b)",
    "g": "CREATE TABLE g (a INTEGER, b, s AS (a * 2) STORED, t AS (typeof(b)))",
}
KEYS = {"k": "id", "kd": "id", "c": "a, b", "wr": "k", "nc": "k"}
SAMPLES: list[object] = [
    None,
    0,
    -0.0,
    0.0,
    1,
    1.0,
    "1",
    b"1",
    "",
    b"",
    2**31,
    -(2**63),
    2**63 - 1,
    float("inf"),
    5e-324,
    "é\U0001f600",
    ("bad", b"a\xffb\xed\xa0\x80"),
    b"\xff" * 40,
]


def _row(name: str, i: int) -> tuple[object, ...]:
    v = SAMPLES[i % len(SAMPLES)]
    w = SAMPLES[(i * 7) % len(SAMPLES)]
    return {
        "k": (i * 3 - 500, v, f"w{i % 13}"),
        "kd": (i * 5, v),
        "c": (f"a{i % 7}", f"b{i * 7919 % 10007:05d}é", v),
        "wr": (f"key-{i * 7919 % 100003:06d}", v, w),
        "nc": (f"Key-{i:06d}", v),
        "n": (SAMPLES[i % 4], v) if i % 3 else (i % 5, "dup"),
        "g": (i % 11, v),
    }[name]


def _build(path: Path, rows: int, shapes: dict[str, str] = SHAPES) -> Path:
    conn = apsw.Connection(str(path))
    with contextlib.closing(conn):
        conn.execute("BEGIN")
        for name, ddl in shapes.items():
            conn.execute(ddl)
            _insert(conn, name, [_row(name, i) for i in range(rows)])
        conn.execute("COMMIT")
    return path


def _reference(path: Path, names: Iterable[str] = SHAPES) -> dict[str, str]:
    """Every table's digest from the definition, over all its rows (read leniently) at once."""
    out = {}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.text_factory = sqlite_fingerprint._lenient_text
        for name in names:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_xinfo({name})")]
            order = "primary-key" if name in KEYS else "row-digests"
            key = KEYS.get(name, "rowid DESC")
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM {name} ORDER BY {key}").fetchall()
            header = canonical_json({"table": name, "columns": cols, "order": order})
            out[name] = table_digest_reference(header, order, rows)
    return out


def _digests(path: Path) -> dict[str, str]:
    return {n: t.digest for n, t in fingerprint_file(path).tables.items()}


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of 64 rows, first chunks of 16, chunks of about 300 bytes (a few rows, their
    count varying), runs of 50 digests: a few thousand rows cross every boundary."""
    monkeypatch.setattr(canonical, "SEGMENT_ROWS", 64)
    monkeypatch.setattr(sqlite_fingerprint, "SEGMENT_ROWS", 64)
    monkeypatch.setattr(sqlite_fingerprint, "SPLIT_MIN_ROWS", 128)
    monkeypatch.setattr(sqlite_fingerprint, "ROW_CHUNK", 16)
    monkeypatch.setattr(sqlite_fingerprint, "RUN_DIGESTS", 50)
    monkeypatch.setattr(sqlite_fingerprint, "MERGE_DIGESTS", 7)
    monkeypatch.setattr(rowcodec, "CHUNK_BYTES", 300)


def _pieces(path: Path, names: Iterable[str], workers: int) -> list[sqlite_fingerprint._Piece]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        codec = sqlite_fingerprint.text_codec(conn)
        plans = [sqlite_fingerprint._table_plan(conn, n, codec) for n in names]
        return sqlite_fingerprint._pieces(conn, plans, workers)


def _read_both(
    path: Path, piece: sqlite_fingerprint._Piece
) -> tuple[sqlite_fingerprint._Read | None, sqlite_fingerprint._Read]:
    """A piece read by the accelerator (None: it declined) and by the Python path. The
    accelerator reads it twice, in a worker's way (APSW, the extension loaded) and in this
    process's way (a `sqlite3` connection given the functions, SQLite of Python's own): both
    read it or decline it alike."""
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    conn = apsw.Connection(f"file:{path}?mode=ro", flags=flags)
    with contextlib.closing(conn):
        conn.execute("BEGIN")
        fast = sqlite_fingerprint._read_accelerated(conn, piece, None)
    with contextlib.closing(connect_read_only(path, functions=True)) as host:
        assert rowcodec.has_functions(host)
        host.execute("BEGIN")
        assert sqlite_fingerprint._read_accelerated(host, piece, None) == fast, piece
    with contextlib.closing(sqlite3.connect(path)) as slow:
        return fast, sqlite_fingerprint._read_with_sqlite3(slow, piece, None)


def _python_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """As an install without the extension: rows read into Python, digests sorted by numpy."""
    monkeypatch.setattr(rowcodec, "load", lambda _conn: False)
    monkeypatch.setattr(rowcodec, "digest_module", lambda: None)


@needs_extension
def test_every_piece_is_read_by_the_accelerator_as_by_python(tmp_path: Path, small: None) -> None:
    db = _build(tmp_path / "a.db", 700)
    pieces = _pieces(db, SHAPES, 2 * len(SHAPES))  # each table two workers' share
    assert all(sum(p.plan.name == n for p in pieces) >= 2 for n in SHAPES)
    rows = dict.fromkeys(SHAPES, 0)
    for piece in pieces:
        fast, slow = _read_both(db, piece)
        assert fast is not None, piece
        assert fast == slow, piece
        rows[piece.plan.name] += fast.rows
    assert rows == dict.fromkeys(SHAPES, 700)


@needs_extension
@pytest.mark.parametrize("accelerated", [True, False], ids=["accelerated", "python"])
def test_split_tables_digest_as_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small: None, accelerated: bool
) -> None:
    db = _build(tmp_path / "a.db", 1500)
    if not accelerated:
        _python_only(monkeypatch)
    monkeypatch.setattr(sqlite_fingerprint, "_worker_count", lambda _path, _tables: 2 * len(SHAPES))
    assert _digests(db) == _reference(db)


@needs_extension
def test_segments_of_the_real_size_are_crossed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More rows than SEGMENT_ROWS, split between two workers, at the default sizes."""
    names = ("k", "wr", "n")
    db = _build(tmp_path / "a.db", canonical.SEGMENT_ROWS * 2 + 1000, {n: SHAPES[n] for n in names})
    pieces = _pieces(db, names, 6)
    assert len(pieces) == 6
    for piece in pieces:
        fast, slow = _read_both(db, piece)
        assert fast is not None
        assert fast == slow
    monkeypatch.setattr(sqlite_fingerprint, "_worker_count", lambda _path, _tables: 6)
    assert _digests(db) == _reference(db, names)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(VALUES, VALUES), min_size=1, max_size=60, unique_by=lambda r: repr(r)))
def test_any_values_digest_the_same_on_both_paths(
    tmp_path_factory: pytest.TempPathFactory, small: None, rows: list[tuple[object, object]]
) -> None:
    if not BUILT:
        pytest.skip("the C accelerator is not built in this install (no C compiler at install)")
    db = tmp_path_factory.mktemp("any") / "a.db"
    conn = apsw.Connection(str(db))
    with contextlib.closing(conn):
        conn.execute("CREATE TABLE k (id INTEGER PRIMARY KEY, a, b); CREATE TABLE n (a, b)")
        _insert(conn, "k", [(i * 7 - 100, *r) for i, r in enumerate(rows)])
        _insert(conn, "n", rows + rows[: len(rows) // 2])  # duplicates
    for piece in _pieces(db, ("k", "n"), 3):
        fast, slow = _read_both(db, piece)
        assert fast is not None
        assert fast == slow


# -- where the accelerator declines, the Python path reads (same digest) -----------------------


@needs_extension
def test_a_table_with_more_columns_than_a_function_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    most = apsw.Connection(":memory:").limit(apsw.SQLITE_LIMIT_FUNCTION_ARG)
    db = tmp_path / "wide.db"
    cols = [f"c{i}" for i in range(most + 1)]
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(f"CREATE TABLE w (id INTEGER PRIMARY KEY, {', '.join(cols)})")
        for i in range(20):
            conn.execute(f"INSERT INTO w (id, c0, c{most}) VALUES (?, ?, ?)", (i, i * 1.5, str(i)))
    _assert_declined_and_same(db, "w", "id", monkeypatch)


def _assert_declined_and_same(
    db: Path, name: str, key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accelerator declines the table, and a worker's fingerprint is still the reference."""
    (piece,) = _pieces(db, (name,), 1)
    fast, slow = _read_both(db, piece)
    assert fast is None
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.text_factory = sqlite_fingerprint._lenient_text
        cols = [r[1] for r in conn.execute(f'PRAGMA table_xinfo("{name}")')]
        codec = sqlite_fingerprint.text_codec(conn)
        if codec is None:
            rows = conn.execute(f'SELECT * FROM "{name}" ORDER BY {key or "rowid"}').fetchall()
        else:  # text as stored (tests/test_sqlite_utf16_text.py)
            select = sqlite_fingerprint._table_plan(conn, name, codec).select
            rows = sqlite_fingerprint.exact_text_rows(
                conn.execute(f"{select} ORDER BY {key or 'rowid'}").fetchall(), codec
            )
    order = "row-digests" if key is None else "primary-key"
    header = canonical_json({"table": name, "columns": cols, "order": order})
    monkeypatch.setattr(sqlite_fingerprint, "PARALLEL_MIN_BYTES", 0)
    assert fingerprint_file(db).tables[name].digest == table_digest_reference(header, order, rows)
    assert slow.rows == len(rows)


@needs_extension
def test_a_key_whose_index_collates_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`k > last` would compare case-blind while the key is unique only case-sensitively: rows
    tied in ORDER BY could be skipped, so the accelerator does not page such a key."""
    db = tmp_path / "c.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TABLE t (k TEXT COLLATE NOCASE NOT NULL, PRIMARY KEY (k COLLATE BINARY))"
        )
        conn.executemany("INSERT INTO t VALUES (?)", [(f"k{i}",) for i in range(10)])
    with contextlib.closing(apsw.Connection(str(db))) as conn:
        assert rowcodec.load(conn)
        assert not rowcodec.keyset_exact(conn, "t", ["k"])
    with contextlib.closing(connect_read_only(db, functions=True)) as host:
        assert not rowcodec.keyset_exact(host, "t", ["k"])
    (piece,) = _pieces(db, ("t",), 1)
    assert _read_both(db, piece)[0] is None


@needs_extension
def test_a_key_text_that_is_not_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small: None
) -> None:
    """The next chunk would start after a key that cannot be bound again as text."""
    db = tmp_path / "k.db"
    with contextlib.closing(apsw.Connection(str(db))) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v) WITHOUT ROWID")
        _insert(conn, "t", [(("bad", b"k\xff%03d" % i), i) for i in range(40)])
    _assert_declined_and_same(db, "t", "k", monkeypatch)


@needs_extension
def test_a_keyless_table_without_a_rowid_to_page_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "r.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (rowid, _rowid_, oid)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i % 3, "x", None) for i in range(30)])
    _assert_declined_and_same(db, "t", None, monkeypatch)


def _rewrite_schema(db: Path, old: str, new: str) -> None:
    """Change a table's declared SQL in place, as `PRAGMA writable_schema` tools do."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ?, ?) WHERE name = 't'", (old, new)
        )


def _utf16_lone_surrogates(db: Path) -> str:
    # Each key starts with a lone high surrogate before 'A': SQLite reads it out as the valid
    # UTF-8 of U+10041, which binds back as a surrogate pair, a different and larger key.
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA encoding = 'UTF-16le'")
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v) WITHOUT ROWID")
        conn.executemany(
            "INSERT INTO t VALUES (CAST(x'00d84100' || ? AS TEXT), ?)",
            [(f"{i:04d}".encode("utf-16-le"), i) for i in range(300)],
        )
    return "k"


def _integers_under_text_affinity(db: Path) -> str:
    # Stored as integers, then declared TEXT: `k > ?` turns the bound integer into text,
    # which sorts after every integer (the rest of the integers would be skipped).
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (k PRIMARY KEY, v) WITHOUT ROWID")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(300)])
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(f"s{i:03d}", i) for i in range(30)])
    _rewrite_schema(db, "k PRIMARY KEY", "k TEXT PRIMARY KEY")
    return "k"


def _nulls_in_a_key_declared_not_null(db: Path) -> str:
    # A NULL in a key column a rewritten schema calls NOT NULL: `(a, b) > (1, NULL)` is NULL
    # for every row, so paging after such a row would end the table there.
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (a NOT NULL, b, v, PRIMARY KEY (a, b))")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?)",
            [(i // 3, None if i % 3 == 0 else i, i) for i in range(300)],
        )
    _rewrite_schema(db, "b, v", "b NOT NULL, v")
    return "a, b"


@needs_extension
@pytest.mark.parametrize(
    "make",
    [_utf16_lone_surrogates, _integers_under_text_affinity, _nulls_in_a_key_declared_not_null],
    ids=["utf16-lone-surrogate", "text-affinity-over-integers", "null-in-not-null-key"],
)
def test_a_key_that_does_not_bind_back_exactly_is_not_paged_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small: None, make: Any
) -> None:
    """Paging by `key > last` needs the last key, bound again, to be the stored key; when it is
    not, rows would be skipped (a change to them unseen), so the piece is read by Python."""
    db = tmp_path / "t.db"
    key = make(db)
    _assert_declined_and_same(db, "t", key, monkeypatch)


AFFINITIES = ["", "TEXT", "INTEGER", "REAL", "NUMERIC", "BLOB"]


@needs_extension
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    keys=st.lists(VALUES, min_size=40, max_size=160),
    stored=st.sampled_from(AFFINITIES),
    declared=st.sampled_from(AFFINITIES),
    utf16=st.booleans(),
)
def test_keyset_paging_reads_every_row_or_declines(
    small: None, keys: list[object], stored: str, declared: str, utf16: bool
) -> None:
    """Any key values, stored under one type affinity and declared (schema rewritten) under
    another, in a UTF-8 or UTF-16 database: every piece the accelerator reads is exactly the
    Python path's (the same rows, none skipped or read twice), or it declines the piece."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "k.db"
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
            if utf16:
                conn.execute("PRAGMA encoding = 'UTF-16le'")
            conn.execute(f"CREATE TABLE t (k {stored} PRIMARY KEY, v) WITHOUT ROWID")
            for i, key in enumerate(keys):
                if isinstance(key, tuple):  # ("bad", bytes): TEXT holding those bytes
                    conn.execute("INSERT OR IGNORE INTO t VALUES (CAST(? AS TEXT), ?)", (key[1], i))
                else:
                    conn.execute("INSERT OR IGNORE INTO t VALUES (?, ?)", (key, i))
            count = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        if declared != stored:
            _rewrite_schema(db, f"k {stored} PRIMARY KEY", f"k {declared} PRIMARY KEY")
        for piece in _pieces(db, ("t",), 2):
            fast, slow = _read_both(db, piece)
            assert fast is None or fast == slow, piece
        (whole,) = _pieces(db, ("t",), 1)
        assert _read_both(db, whole)[1].rows == count
