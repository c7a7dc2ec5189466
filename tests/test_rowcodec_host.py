"""The C functions on connections of Python's own `sqlite3` module (rowcodec.connect_with_functions).

A fingerprint read in rollproof's own process (a file under the workers' threshold, a WAL
database, a snapshot or committed clone) goes through Python's `sqlite3`, which cannot load
extensions in every build; the second copy of the extension is registered with that module's
SQLite for one `connect` and cancelled again. These tests hold it to: the same digests as
every other path, never on a connection that runs a change's or a user's SQL, never left
registered, the database's own schema unable to call the functions, and a silent fall back to
the Python path where it cannot be had.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from rollproof.core.change import load_change
from rollproof.core.model import Verdict
from rollproof.engines.sqlite import fingerprint as sqlite_fingerprint
from rollproof.engines.sqlite import rowcodec
from rollproof.engines.sqlite.source import connect_read_only, fingerprint_file
from rollproof.rehearse.flow import rehearse

from .test_rowcodec import SHAPES, _build, _reference

HOST = rowcodec._host() is not None
needs_host = pytest.mark.skipif(
    not HOST,
    reason="no second copy of the extension, or this Python's SQLite cannot take it",
)
FUNCTIONS = [
    "rollproof_rows",
    "rollproof_rows_after",
    "rollproof_row_digests",
    "rollproof_last",
    "rollproof_collation",
]


class _Plain(sqlite3.Connection):
    """A writable connection that can carry the mark."""


def _has_any(conn: sqlite3.Connection) -> list[str]:
    """The functions `conn` has: a call fails with "no such function" exactly where not."""
    found = []
    for name in FUNCTIONS:
        try:
            conn.execute(f"SELECT {name}(1, 2)").fetchall()
        except sqlite3.OperationalError as e:
            if str(e) == f"no such function: {name}":
                continue
        found.append(name)
    return found


def test_the_host_copy_is_built_and_registers_where_a_compiler_is() -> None:
    """A broken registration must not pass for an install without the extension."""
    if rowcodec.extension_path() is None:
        pytest.skip("the C accelerator is not built in this install (no C compiler at install)")
    if sqlite3.sqlite_version_info < rowcodec.HOST_MIN_SQLITE:
        pytest.skip(f"this Python's SQLite {sqlite3.sqlite_version} predates DIRECTONLY (3.31)")
    assert HOST, "the extension is built but the in-process copy cannot be registered"
    with contextlib.closing(rowcodec.connect_with_functions(lambda: _Plain(":memory:"))) as conn:
        assert rowcodec.has_functions(conn)
        assert _has_any(conn) == FUNCTIONS


@needs_host
def test_registration_ends_with_the_connect_call(tmp_path: Path) -> None:
    """A connection opened afterwards, any way, has none of the functions; nor does one opened
    when the connect inside failed."""
    with contextlib.closing(connect_read_only(_build(tmp_path / "a.db", 10), functions=True)):
        pass
    with contextlib.closing(sqlite3.connect(":memory:")) as after:
        assert _has_any(after) == []

    def fails() -> _Plain:
        raise sqlite3.OperationalError("unable to open database file")

    with pytest.raises(sqlite3.OperationalError, match=r"^unable to open database file$"):
        rowcodec.connect_with_functions(fails)
    with contextlib.closing(sqlite3.connect(":memory:")) as after:
        assert _has_any(after) == []
    with contextlib.closing(connect_read_only(tmp_path / "a.db")) as without:
        assert not rowcodec.has_functions(without)
        assert _has_any(without) == []


@needs_host
@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_databases_own_schema_cannot_call_them(tmp_path: Path, function: str) -> None:
    """DIRECTONLY on this library too: a view or trigger of the database being read cannot
    make rollproof's process run them."""
    db = tmp_path / "v.db"
    args = "a, a" if function == "rollproof_collation" else "a"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as setup:
        setup.execute("CREATE TABLE t (a)")
        setup.execute("CREATE TABLE log (b)")
        setup.execute(f"CREATE VIEW v AS SELECT {function}({args}) FROM t")
        setup.execute(
            f"CREATE TRIGGER tr AFTER INSERT ON t BEGIN "
            f"INSERT INTO log SELECT {function}({args.replace('a', 'new.a')}); END"
        )
    unsafe = rf"^unsafe use of {function}\(\)$"
    with contextlib.closing(
        rowcodec.connect_with_functions(lambda: _Plain(db, isolation_level=None))
    ) as conn:
        assert rowcodec.has_functions(conn)
        with pytest.raises(sqlite3.OperationalError, match=unsafe):
            conn.execute("SELECT * FROM v").fetchall()
        with pytest.raises(sqlite3.OperationalError, match=unsafe):
            conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT count(*) FROM log").fetchone() == (0,)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of connection `_read_accelerated` read a piece on (a read it declined is not
    counted)."""
    seen: list[str] = []
    real = sqlite_fingerprint._read_accelerated

    def spy(conn, piece, spill):  # type: ignore[no-untyped-def]
        read = real(conn, piece, spill)
        if read is not None:
            seen.append("sqlite3" if isinstance(conn, sqlite3.Connection) else "apsw")
        return read

    monkeypatch.setattr(sqlite_fingerprint, "_read_accelerated", spy)
    return seen


@needs_host
def test_a_small_file_is_read_in_process_by_the_functions(
    tmp_path: Path, counted: list[str]
) -> None:
    """Under the workers' threshold every table is read by the functions in this process, to
    the reference digests (SHAPES: keys of every kind, key-less, generated columns)."""
    db = _build(tmp_path / "a.db", 300)
    assert db.stat().st_size < sqlite_fingerprint.PARALLEL_MIN_BYTES
    assert {n: t.digest for n, t in fingerprint_file(db).tables.items()} == _reference(db)
    assert counted == ["sqlite3"] * len(SHAPES)


@needs_host
def test_without_the_host_copy_the_python_path_reads_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: list[str]
) -> None:
    db = _build(tmp_path / "a.db", 300)
    with_functions = fingerprint_file(db)
    monkeypatch.setattr(rowcodec, "_host", lambda: None)
    counted.clear()
    assert fingerprint_file(db) == with_functions
    assert counted == []


@needs_host
def test_an_older_sqlite_is_not_given_the_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLITE_DIRECTONLY is 3.31's: a library before it would register the functions callable
    from a database's own views and triggers."""
    rowcodec._host.cache_clear()
    try:
        monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 30, 1))
        assert rowcodec._host() is None
        conn = rowcodec.connect_with_functions(lambda: _Plain(":memory:"))
        with contextlib.closing(conn):
            assert not rowcodec.has_functions(conn)
            assert _has_any(conn) == []
    finally:
        rowcodec._host.cache_clear()


@needs_host
def test_outside_a_transaction_the_python_path_reads(tmp_path: Path, counted: list[str]) -> None:
    """A chunked read is several queries: only a read transaction makes them one state."""
    db = _build(tmp_path / "a.db", 300)
    with contextlib.closing(connect_read_only(db, functions=True)) as conn:
        codec = sqlite_fingerprint.text_codec(conn)
        plan = sqlite_fingerprint._table_plan(conn, "k", codec)
        outside = sqlite_fingerprint._read_with_sqlite3(conn, sqlite_fingerprint._Piece(plan), None)
        assert counted == []
        conn.execute("BEGIN")
        inside = sqlite_fingerprint._read_with_sqlite3(conn, sqlite_fingerprint._Piece(plan), None)
        assert counted == ["sqlite3"]
    assert inside == outside


def _change(root: Path, apply: str, verify: str | None = None) -> Path:
    root.mkdir()
    (root / "apply.sql").write_text(apply)
    (root / "revert.sql").write_text("DELETE FROM t WHERE a = 99;\n")
    extra = ""
    if verify is not None:
        (root / "verify.sql").write_text(verify)
        extra = 'verify = "verify.sql"\n'
    (root / "change.toml").write_text(
        f'apply = "apply.sql"\nrevert = "revert.sql"\n{extra}'
        '[surfaces]\nreads = []\nwrites = ["t"]\n'
    )
    return root


@needs_host
@pytest.mark.parametrize("script", ["apply", "verify"])
def test_a_change_or_verify_script_cannot_call_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    """The connections a change and a verify script run on never have the functions: a script
    calling one fails in the rehearsal as it would in production ("no such function"); and
    they are opened under the registration's lock (`connect_without_functions`)."""
    guarded: list[object] = []
    real = rowcodec.connect_without_functions

    def spy(connect):  # type: ignore[no-untyped-def]
        conn = real(connect)
        guarded.append(conn)
        return conn

    monkeypatch.setattr(rowcodec, "connect_without_functions", spy)
    (tmp_path / "source").mkdir()
    db = tmp_path / "source" / "src.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as setup:
        setup.execute("CREATE TABLE t (a)")
        setup.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(20)])
    before = db.read_bytes()
    call = "SELECT rollproof_rows(a) FROM t;\n"
    apply = call if script == "apply" else "INSERT INTO t VALUES (99);\n"
    change = load_change(_change(tmp_path / "change", apply, call if script == "verify" else None))
    result = rehearse(change, str(db), workdir=tmp_path / "work")
    assert result.overall is Verdict.FAIL
    errors = [leg.reason for leg in result.legs if leg.verdict is Verdict.FAIL and leg.reason]
    assert errors
    assert all("no such function: rollproof_rows" in e for e in errors), errors
    assert db.read_bytes() == before
    # the clone connections the scripts ran on (apply, revert), or the verify connection
    assert len(guarded) >= 2


@needs_host
def test_a_change_connection_waits_for_a_registration_to_end(tmp_path: Path) -> None:
    """A connection that will run a change's or a user's SQL is opened under the registration's
    lock: while another thread registers the functions, it waits, and it never has them."""
    import threading

    db = _build(tmp_path / "a.db", 10)
    opened: list[sqlite3.Connection] = []

    def open_for_a_change() -> None:
        opened.append(
            rowcodec.connect_without_functions(
                lambda: _Plain(db, isolation_level=None, check_same_thread=False)
            )
        )

    with rowcodec._HOST_LOCK:  # as during another thread's connect_with_functions
        register, cancel, address = rowcodec._host()  # type: ignore[misc]
        assert register(address) == 0
        try:
            waiter = threading.Thread(target=open_for_a_change)
            waiter.start()
            waiter.join(0.3)
            assert waiter.is_alive()  # it waits for the registration to end
            assert opened == []
        finally:
            cancel(address)
    waiter.join(10)
    (conn,) = opened
    with contextlib.closing(conn):
        assert not rowcodec.has_functions(conn)
        assert _has_any(conn) == []
    with contextlib.closing(connect_read_only(db)) as plain:
        assert _has_any(plain) == []


@needs_host
def test_a_wal_database_is_read_in_process_by_the_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: list[str]
) -> None:
    """A WAL database is read in one process whatever its size (its snapshot is one
    connection's): by the functions, to the reference digests, a writer's open transaction
    unseen."""
    db = _build(tmp_path / "w.db", 300)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as setup:
        assert setup.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    reference = _reference(db)
    monkeypatch.setattr(sqlite_fingerprint, "PARALLEL_MIN_BYTES", 0)  # workers, were it not WAL
    writer = sqlite3.connect(db, isolation_level=None)
    with contextlib.closing(writer):
        writer.execute("BEGIN")
        writer.execute("INSERT INTO k (id, v) VALUES (100000, 'uncommitted')")
        assert {n: t.digest for n, t in fingerprint_file(db).tables.items()} == reference
        writer.execute("ROLLBACK")
    assert counted == ["sqlite3"] * len(SHAPES)
