"""`rollproof fingerprint DB [--json]`: output, exit codes, and the source left untouched."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.core.fingerprint import Fingerprint
from rollproof.engines.sqlite.source import fingerprint_file

SOURCE_SQL = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, fax TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id INTEGER NOT NULL);
CREATE TABLE tags (label, weight);
CREATE INDEX tags_label ON tags (label);
INSERT INTO customers (name, fax) VALUES ('ann', NULL), ('bob', '555'), ('cé', x'00ff');
INSERT INTO orders (customer_id) VALUES (1), (1), (3);
INSERT INTO tags VALUES ('a', 1), ('a', 1.0), ('a', 1), (NULL, '1');
ANALYZE;
"""


def make_db(path: Path, sql: str = SOURCE_SQL) -> Path:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executescript(sql)
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "source.db")


def human_lines(fp: Fingerprint) -> list[str]:
    lines = [fp.digest]
    for name, t in sorted(fp.tables.items()):
        lines.append(f"  table {name}: {t.digest} ({t.rows:,} rows, {t.order})")
    for name, seq in sorted(fp.sequences.items()):
        lines.append(f"  sequence {name}: {seq}")
    lines.append(f"  schema: {fp.schema_structural} (ddl text {fp.schema_ddl_text})")
    if fp.excluded:
        lines.append("  excluded: " + ", ".join(fp.excluded))
    return lines


def test_prints_whole_digest_first_and_exits_0(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fp = fingerprint_file(db)
    capsys.readouterr()
    assert main(["fingerprint", str(db)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == fp.digest
    assert lines == human_lines(fp)
    assert err == ""
    # the fixture really exercises every section of the output
    assert dict(fp.sequences) == {"orders": 3}
    assert fp.excluded == ("sqlite_stat1",)
    assert {n: (t.rows, t.order) for n, t in fp.tables.items()} == {
        "customers": (3, "primary-key"),
        "orders": (3, "primary-key"),
        "tags": (4, "row-digests"),
    }


def test_json_output_equals_library_fingerprint(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fp = fingerprint_file(db)
    capsys.readouterr()
    assert main(["fingerprint", "--json", str(db)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == fp.to_json()
    assert json.loads(out)["digest"] == fp.digest
    assert err == ""


def test_row_counts_use_thousands_separators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_db(
        tmp_path / "many.db",
        "CREATE TABLE n (x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
        "WHERE i < 1234) INSERT INTO n SELECT i FROM c;",
    )
    fp = fingerprint_file(path)
    assert main(["fingerprint", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"  table n: {fp.tables['n'].digest} (1,234 rows, row-digests)" in out.splitlines()


def test_missing_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.db"
    assert main(["fingerprint", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("rollproof: source")
    assert str(missing) in lines[0]
    assert "no such file" in lines[0]
    assert not missing.exists()  # nothing was created in its place


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"CREATE TABLE t (a);\n", "not a SQLite database", id="sql-text"),
        pytest.param(b"SQLite format 2\x00" + bytes(100), "not a SQLite database", id="bad-header"),
    ],
)
def test_non_sqlite_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "not.db"
    path.write_bytes(content)
    assert main(["fingerprint", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("rollproof: source")
    assert message in lines[0]
    assert path.read_bytes() == content


def test_an_empty_file_fingerprints_as_an_empty_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite reads a 0-byte file as an empty database: a first migration's natural source."""
    path = tmp_path / "new.db"
    path.write_bytes(b"")
    assert main(["fingerprint", str(path), "--json"]) == 0
    fp = json.loads(capsys.readouterr().out)
    assert fp["tables"] == {}
    assert path.read_bytes() == b""


def test_sqlite_header_with_garbage_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "garbage.db"
    content = b"SQLite format 3\x00" + b"\x07" * 500
    path.write_bytes(content)
    assert main(["fingerprint", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("rollproof: ")
    assert "not a usable SQLite database: page size 1799" in lines[0]
    assert path.read_bytes() == content


def test_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fingerprint", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"rollproof: source {tmp_path}: not a regular file"]


@pytest.mark.parametrize(
    "as_json", [pytest.param([], id="text"), pytest.param(["--json"], id="json")]
)
def test_source_bytes_unchanged(
    db: Path, capsys: pytest.CaptureFixture[str], as_json: list[str]
) -> None:
    before = sha256_file(db)
    listing = sorted(os.listdir(db.parent))
    mtime = db.stat().st_mtime_ns
    assert main(["fingerprint", *as_json, str(db)]) == 0
    capsys.readouterr()
    assert sha256_file(db) == before
    assert db.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(db.parent)) == listing  # no journal or WAL left beside it


def test_wal_source_main_file_bytes_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_db(tmp_path / "wal.db", "PRAGMA journal_mode = WAL;" + SOURCE_SQL)
    assert not (tmp_path / "wal.db-wal").exists()  # checkpointed and removed on close
    before = sha256_file(path)
    expected = fingerprint_file(path)
    assert sha256_file(path) == before
    assert main(["fingerprint", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == expected.digest
    assert sha256_file(path) == before


def test_fingerprint_is_deterministic_across_runs(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fingerprint", "--json", str(db)]) == 0
    first = capsys.readouterr().out
    assert main(["fingerprint", "--json", str(db)]) == 0
    assert capsys.readouterr().out == first


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "80"
    return env


def test_python_m_rollproof_fingerprint_subprocess(db: Path) -> None:
    expected = fingerprint_file(db)
    before = sha256_file(db)
    proc = subprocess.run(
        [sys.executable, "-m", "rollproof", "fingerprint", str(db)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == expected.digest
    assert proc.stdout.splitlines() == human_lines(expected)
    assert proc.stderr == ""
    assert sha256_file(db) == before


def test_python_m_rollproof_missing_file_subprocess(tmp_path: Path) -> None:
    missing = tmp_path / "absent.db"
    proc = subprocess.run(
        [sys.executable, "-m", "rollproof", "fingerprint", "--json", str(missing)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("rollproof: source")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "name", [pytest.param("[bold]x", id="style-tag"), pytest.param("[/]", id="closing-tag")]
)
def test_table_names_are_printed_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    quoted = '"' + name.replace('"', '""') + '"'
    path = make_db(tmp_path / "names.db", f"CREATE TABLE {quoted} (a);")
    fp = fingerprint_file(path)
    assert main(["fingerprint", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == human_lines(fp)
