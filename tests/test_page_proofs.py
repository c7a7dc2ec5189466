"""Table digests proven from page bytes (engines/sqlite_pages): used when the pages match, and
never in place of a re-read when anything the rows depend on differs."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollproof.core.errors import EnvironmentProblemError
from rollproof.core.fingerprint import Reuse
from rollproof.core.guard import SurfaceGuard
from rollproof.core.policy import ReadMode
from rollproof.engines.sqlite.pages import page_digest, page_map
from rollproof.engines.sqlite.session import SqliteSession
from rollproof.engines.sqlite.source import connect_read_only, fingerprint_file
from tests.conftest import MakeChange, sha256_file


def _db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, body BLOB);
        CREATE INDEX idx_docs_title ON docs(title);
        CREATE TABLE other (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        """
    )
    # 20 kB bodies: each row spills onto overflow pages.
    conn.executemany(
        "INSERT INTO docs (title, body) VALUES (?, ?)",
        [(f"t{i}", bytes([i % 251]) * 20_000) for i in range(40)],
    )
    conn.executemany("INSERT INTO other VALUES (?, ?)", [(f"k{i}", i) for i in range(500)])
    conn.commit()
    conn.close()
    return path


def _digest(
    path: Path, table: str = "docs", schema: str = "s", *, mapped_in: Path | None = None
) -> str | None:
    """The page digest of `path`'s bytes at the pages `table` occupies in `mapped_in`."""
    with contextlib.closing(connect_read_only(mapped_in or path)) as conn:
        where = page_map(conn, table)
    assert where is not None
    with contextlib.closing(connect_read_only(path)) as conn:
        return page_digest(conn, path, table, schema, where)


def _edit(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.close()


def test_identical_bytes_give_one_page_digest(tmp_path: Path) -> None:
    a = _db(tmp_path / "a.db")
    b = tmp_path / "b.db"
    shutil.copyfile(a, b)
    assert _digest(a) is not None
    assert _digest(a) == _digest(b) == _digest(b, mapped_in=a)
    assert _digest(a, "other") == _digest(b, "other", mapped_in=a)
    assert _digest(a) != _digest(a, "other")
    assert _digest(a, schema="s") != _digest(a, schema="t")  # the schema digest is covered


@pytest.mark.parametrize(
    "sql",
    [
        # one byte in the middle of one row's overflow chain
        pytest.param(
            "UPDATE docs SET body = substr(body, 1, 10000) || x'ff' || substr(body, 10002) "
            "WHERE id = 7;",
            id="overflow-page",
        ),
        pytest.param("UPDATE docs SET title = 'changed' WHERE id = 3;", id="leaf-and-index"),
        pytest.param("REINDEX idx_docs_title;", id="index-rebuilt-content-equal"),
    ],
)
def test_any_change_to_a_tables_pages_changes_its_page_digest(tmp_path: Path, sql: str) -> None:
    a = _db(tmp_path / "a.db")
    b = tmp_path / "b.db"
    shutil.copyfile(a, b)
    _edit(b, sql)
    assert _digest(b, mapped_in=a) != _digest(a)  # b's bytes where a's b-trees lie
    assert _digest(b) != _digest(a)  # b's own b-trees
    # another table's pages are untouched
    assert _digest(b, "other", mapped_in=a) == _digest(a, "other")


def test_no_page_digest_in_wal_mode_or_beside_a_journal(tmp_path: Path) -> None:
    a = _db(tmp_path / "a.db")
    with contextlib.closing(connect_read_only(a)) as conn:
        where = page_map(conn, "docs")
        assert where is not None
        assert page_digest(conn, a, "docs", "s", where) is not None
    (tmp_path / "a.db-journal").write_bytes(b"x" * 512)
    with contextlib.closing(connect_read_only(a)) as conn:
        assert page_digest(conn, a, "docs", "s", where) is None
    (tmp_path / "a.db-journal").unlink()
    _edit(a, "PRAGMA journal_mode = WAL;")
    with contextlib.closing(connect_read_only(a)) as conn:
        assert page_digest(conn, a, "docs", "s", where) is None


@pytest.fixture
def session(tmp_path: Path) -> Iterator[SqliteSession]:
    """A session on a 'production' file whose bytes must not change; closed afterwards."""
    (tmp_path / "src").mkdir()
    src = _db(tmp_path / "src" / "prod.db")
    before_bytes = sha256_file(src)
    guard = SurfaceGuard(
        reads=(), writes=("docs",), forbidden=(), read_mode=ReadMode.REPORT, forbidden_env=()
    )
    s = SqliteSession(str(src), workdir=tmp_path / "work", guard=guard)
    try:
        yield s
    finally:
        workspace = s.workspace
        s.close(keep=False)
        assert not workspace.exists()
        assert sha256_file(src) == before_bytes


def test_a_restored_table_is_proven_by_its_pages_and_a_changed_one_is_read(
    session: SqliteSession, make_change: MakeChange
) -> None:
    s = session
    change = make_change(
        "UPDATE docs SET title = title || '!' WHERE id % 2 = 0;",
        "UPDATE docs SET title = substr(title, 1, length(title) - 1) WHERE id % 2 = 0;",
    )
    before = s.snapshot_fingerprint()
    # The declared write's pages were located while the snapshot was fingerprinted.
    assert set(s._page_proofs().known) == {"docs"}
    written = frozenset({"docs"})
    s.fresh_clone()
    assert s.run_script("apply", change.apply, change.connection).ok
    applied = s.fingerprint_clone(Reuse(before, written))
    pages = s._page_proofs()
    assert pages.proven == 0  # the change's pages are new: the rows were read
    assert applied.tables["docs"].digest != before.tables["docs"].digest
    s.restore_clone()
    restored = s.fingerprint_clone(Reuse(before, written))
    assert pages.proven == 1  # the snapshot's pages: proven without reading the rows
    assert restored == before
    # The same change again lands on the same pages: proven equal to the first apply.
    assert s.run_script("apply", change.apply, change.connection).ok
    again = s.fingerprint_clone(Reuse(before, written))
    assert pages.proven == 2
    assert again == applied


def test_proven_digests_equal_a_full_read(session: SqliteSession, make_change: MakeChange) -> None:
    s = session
    change = make_change("DELETE FROM docs WHERE id = 1;", "SELECT 1;")
    before = s.snapshot_fingerprint()
    s.fresh_clone()
    assert s.run_script("apply", change.apply, change.connection).ok
    s.restore_clone()
    proven = s.fingerprint_clone(Reuse(before, frozenset({"docs"})))
    assert s._page_proofs().proven == 1
    assert proven == s.fingerprint_clone(None) == fingerprint_file(s.clone)


def test_full_fingerprints_prove_nothing_from_pages(session: SqliteSession) -> None:
    session.snapshot_fingerprint()
    session.fresh_clone()
    session.fingerprint_clone(None)
    assert session._page_proofs().proven == 0


# -- the spare clone copied on another thread ----------------------------------------------------


def test_a_prepared_clone_is_a_checked_copy_of_the_snapshot(session: SqliteSession) -> None:
    s = session
    s.prepare_clone()
    s.fresh_clone()
    assert s.clone.read_bytes() == s.snapshot.read_bytes()
    assert not (s.workspace / "spare.db").exists()
    s.fresh_clone()  # no spare prepared: copied in place, the same bytes
    assert s.clone.read_bytes() == s.snapshot.read_bytes()


def test_a_spare_copied_from_a_changed_snapshot_is_refused(session: SqliteSession) -> None:
    s = session
    s.snapshot.chmod(0o600)
    with s.snapshot.open("r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 1]))
    s.prepare_clone()
    with pytest.raises(EnvironmentProblemError) as info:
        s.fresh_clone()
    assert str(info.value) == (
        "working clone does not match the snapshot taken at the start, byte for byte"
    )


def test_closing_while_a_spare_is_being_copied_leaves_nothing(session: SqliteSession) -> None:
    session.prepare_clone()  # the fixture closes the session at once and checks the workspace
