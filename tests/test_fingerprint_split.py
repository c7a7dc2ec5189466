"""Fingerprint v3's table digests on real SQLite files: split across workers, spilled to sorted
runs, or read whole in one process, a table digests exactly as the documented definition
(`table_digest_reference`) computes it from all its rows at once."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from pathlib import Path

import pytest

from rollproof.core import canonical
from rollproof.core.canonical import SqlValue, canonical_json, table_digest_reference
from rollproof.engines.sqlite import fingerprint as sqlite_fingerprint
from rollproof.engines.sqlite.source import fingerprint_file

Row = tuple[SqlValue, ...]

TABLES = {
    "k": ("CREATE TABLE k (id INTEGER PRIMARY KEY, v, w TEXT)", ["id", "v", "w"]),
    "c": ("CREATE TABLE c (a INTEGER NOT NULL, b TEXT NOT NULL, v, PRIMARY KEY (a, b))", None),
    "wr": ("CREATE TABLE wr (k TEXT PRIMARY KEY, v) WITHOUT ROWID", None),
    "n": ("CREATE TABLE n (a, b)", None),
}
LOOKALIKES: list[SqlValue] = [None, 0, 0.0, -0.0, 1, 1.0, "1", b"1", "", b""]


def _rows(i: int) -> dict[str, Row]:
    v = LOOKALIKES[i % len(LOOKALIKES)]
    return {
        "k": (i * 2 - 900, v, f"w{i % 13}"),  # rowids with gaps
        "c": (i % 17, f"b{i}", v),
        "wr": (f"key-{i * 7919 % 100003:06d}", v),
        # many exact duplicates, and rows SQL calls equal that encode differently
        "n": (LOOKALIKES[i % 4], v) if i % 3 else (i % 5, "dup"),
    }


def _build(path: Path, rows: int) -> Path:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for ddl, _ in TABLES.values():
            conn.execute(ddl)
        conn.execute("BEGIN")
        for i in range(rows):
            for name, row in _rows(i).items():
                marks = ", ".join("?" * len(row))
                conn.execute(f"INSERT INTO {name} VALUES ({marks})", row)
        conn.execute("COMMIT")
    return path


def _expected(path: Path) -> dict[str, str]:
    """Every table's digest from the reference definition, over all its rows at once."""
    out = {}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for name in TABLES:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({name})")]
            keyed = name != "n"
            order = "primary-key" if keyed else "row-digests"
            key = {"k": "id", "c": "a, b", "wr": "k"}.get(name, "rowid DESC")
            rows = conn.execute(f"SELECT * FROM {name} ORDER BY {key}").fetchall()
            header = canonical_json({"table": name, "columns": cols, "order": order})
            out[name] = table_digest_reference(header, order, rows)
    return out


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of 64 rows, batches of 16 and runs of 50 digests (spilled at 64, a batch
    boundary), so that a few thousand rows make several pieces, segments and spilled runs."""
    monkeypatch.setattr(canonical, "SEGMENT_ROWS", 64)
    monkeypatch.setattr(sqlite_fingerprint, "SEGMENT_ROWS", 64)
    monkeypatch.setattr(sqlite_fingerprint, "SPLIT_MIN_ROWS", 128)
    monkeypatch.setattr(sqlite_fingerprint, "ROW_CHUNK", 16)
    monkeypatch.setattr(sqlite_fingerprint, "RUN_DIGESTS", 50)
    monkeypatch.setattr(sqlite_fingerprint, "MERGE_DIGESTS", 7)


def _digests(path: Path) -> dict[str, str]:
    return {n: t.digest for n, t in fingerprint_file(path).tables.items()}


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "workers"])
def test_table_digests_follow_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    db = _build(tmp_path / "a.db", 700)
    monkeypatch.setattr(sqlite_fingerprint, "PARALLEL_MIN_BYTES", 0 if parallel else 1 << 62)
    assert _digests(db) == _expected(db)


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "workers"])
def test_split_and_spilled_tables_digest_as_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_segments: None, parallel: bool
) -> None:
    db = _build(tmp_path / "a.db", 1500)
    # eight workers for four equal tables: each table is two workers' share
    workers = 8 if parallel else 0
    monkeypatch.setattr(sqlite_fingerprint, "_worker_count", lambda _path, _tables: workers)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        plans = [sqlite_fingerprint._table_plan(conn, n) for n in TABLES]
        pieces = sqlite_fingerprint._pieces(conn, plans, 8)
    assert all(sum(p.plan.name == name for p in pieces) >= 2 for name in TABLES)
    # a key-less table is read in whatever order SQLite returns it; a keyed one in key order
    for piece in pieces:
        sql, _params = piece.query()
        assert ("ORDER BY" in sql) == (piece.plan.name != "n"), sql
    assert {p.offset % 64 for p in pieces} == {0}  # keyed tables cut at segment boundaries
    assert {(p.low, p.high) for p in pieces if p.plan.name == "n"} == {(None, 751), (751, None)}
    assert _digests(db) == _expected(db)


def test_row_digests_spill_sorted_runs_and_merge_them(tmp_path: Path, small_segments: None) -> None:
    db = _build(tmp_path / "a.db", 400)
    spill = tmp_path / "spill"
    spill.mkdir()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        plan = sqlite_fingerprint._table_plan(conn, "n")
        read = sqlite_fingerprint._read_with_sqlite3(
            conn, sqlite_fingerprint._Piece(plan), str(spill)
        )
        digest = sqlite_fingerprint._combine(plan, [read])
    files = [r for r in read.runs if isinstance(r, str)]
    assert len(files) == 400 // 64  # the rest, 16 digests, stays in memory
    assert len(read.runs) == len(files) + 1
    assert isinstance(read.runs[-1], (bytes, bytearray))
    assert sorted(p.name for p in spill.iterdir()) == sorted(Path(f).name for f in files)
    assert read.rows == 400
    assert digest.digest == _expected(db)["n"]


def test_spill_directory_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_segments: None
) -> None:
    db = _build(tmp_path / "a.db", 300)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    for threshold in (0, 1 << 62):
        monkeypatch.setattr(sqlite_fingerprint, "PARALLEL_MIN_BYTES", threshold)
        assert _digests(db) == _expected(db)
        assert list(temp.iterdir()) == []


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param([(1,), (1,)], [(1,), (1.0,)], id="int-vs-real"),
        pytest.param([(0.0,)], [(-0.0,)], id="zero-signs"),
        pytest.param([(1,), (1,), (2,)], [(1,), (2,), (2,)], id="multiplicity"),
        pytest.param([(1,), (1,)], [(1,)], id="duplicate-counts"),
        pytest.param([("a3", "b")], [("a", "3b")], id="boundaries"),
    ],
)
def test_row_digests_tell_multisets_apart(tmp_path: Path, a: list[Row], b: list[Row]) -> None:
    paths = []
    for tag, rows in (("a", a), ("b", b)):
        path = tmp_path / f"{tag}.db"
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute(f"CREATE TABLE n ({', '.join(f'c{i}' for i in range(len(rows[0])))})")
            for row in rows:
                conn.execute(f"INSERT INTO n VALUES ({', '.join('?' * len(row))})", row)
        paths.append(path)
    fa, fb = (fingerprint_file(p).tables["n"] for p in paths)
    assert fa.order == fb.order == "row-digests"
    assert fa.digest != fb.digest
    # and reading the same rows in another physical order changes nothing
    with contextlib.closing(sqlite3.connect(paths[0], isolation_level=None)) as conn:
        conn.execute("CREATE TABLE m AS SELECT * FROM n ORDER BY rowid DESC")
        conn.execute("DROP TABLE n")
        conn.execute("ALTER TABLE m RENAME TO n")
    assert fingerprint_file(paths[0]).tables["n"].digest == fa.digest


# Digests that differ only in trailing zero bytes, or by a zero byte against a shorter-looking
# one: numpy's fixed-width byte strings pad with zeros, so these are where its order could
# part from the byte-string order the definition uses.
EDGE_DIGESTS = [
    b"\x00" * 32,
    b"\x00" * 31 + b"\x01",
    b"a" + b"\x00" * 31,
    b"a" + b"\x00" * 30 + b"\x01",
    b"a\x01" + b"\x00" * 30,
    b"\xff" * 32,
    b"\xff" * 31 + b"\x00",
    b"\x80" + b"\x00" * 31,
]


def test_digests_sort_and_merge_as_byte_strings(small_segments: None) -> None:
    digests = [*EDGE_DIGESTS, *EDGE_DIGESTS[::2], *(bytes([i]) * 32 for i in range(0, 256, 7))]
    expected = b"".join(sorted(digests))
    assert bytes(sqlite_fingerprint._sort_digests(bytearray(b"".join(digests)))) == expected
    # three sorted runs, merged in blocks of MERGE_DIGESTS (7) digests
    runs: list[bytes | bytearray | str] = [
        sqlite_fingerprint._sort_digests(bytearray(b"".join(digests[i::3]))) for i in range(3)
    ]
    out: list[bytes] = []
    sqlite_fingerprint._merge_into(runs, lambda block: out.append(bytes(block)))
    assert b"".join(out) == expected
    out.clear()
    for block in sqlite_fingerprint._merged_by_numpy(runs):
        out.append(block)
    assert b"".join(out) == expected


def test_a_workers_runs_come_back_as_files(tmp_path: Path) -> None:
    """A worker hands its sorted runs back as files in the spill directory (the parent maps
    them): the same bytes, paths in place of the runs, runs already spilled kept; nothing to
    write without a spill directory; a write that fails leaves no file behind."""
    spill = tmp_path / "spill"
    spill.mkdir()
    first, second = b"\x01" * 64, b"\x02" * 32
    kept = spill / "run-kept"
    kept.write_bytes(b"\x00" * 32)
    read = sqlite_fingerprint._Read(rows=4, runs=(first, str(kept), bytearray(second)))
    assert sqlite_fingerprint._runs_to_files(read, None) is read
    back = sqlite_fingerprint._runs_to_files(read, str(spill))
    assert back.rows == 4
    assert back.runs[1] == str(kept)
    assert all(isinstance(run, str) for run in back.runs)
    assert [Path(str(run)).read_bytes() for run in back.runs] == [first, b"\x00" * 32, second]
    out: list[bytes] = []
    sqlite_fingerprint._merge_into(list(back.runs), lambda block: out.append(bytes(block)))
    assert b"".join(out) == b"\x00" * 32 + first + second
    gone = tmp_path / "gone"
    with pytest.raises(FileNotFoundError):
        sqlite_fingerprint._runs_to_files(read, str(gone))
    assert not kept.exists()  # a failed hand-back removes the piece's runs, as a failed read does
