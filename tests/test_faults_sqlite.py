"""Damaged SQLite sources and a failing machine end in their documented exit codes, never 70.

Every row runs the real CLI (`python -m rollproof`) in a subprocess, for `rehearse` and for
`fingerprint`, and asserts the exit code, one line on stderr containing the expected words, no
traceback, and no packet. A damaged source is the user's to fix (exit 2); a full disk or a
file-size limit is the machine's (exit 4) and never a leg that says the change failed. The
control rows (a good source, an empty file as a first migration's source) pass.
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CHANGE = """\
apply_sql = "INSERT INTO t VALUES (99999, x'00');"
revert_sql = "DELETE FROM t WHERE x = 99999;"
[surfaces]
writes = ["t"]
"""


def _good(path: Path, rows: int = 2000) -> bytes:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, y BLOB)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, b"v" * 200) for i in range(rows)])
    conn.close()
    return path.read_bytes()


def _patched(offset: int, data: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        b = bytearray(_good(path))
        b[offset : offset + len(data)] = data
        path.write_bytes(bytes(b))

    return make


def _truncated(size: int | None) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        data = _good(path)
        path.write_bytes(data[: len(data) // 2 if size is None else size])

    return make


def _hot_journal(path: Path) -> None:
    _good(path)
    # A rollback journal's magic and a header: what a writer killed mid-transaction leaves.
    Path(f"{path}-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\x01" * 600)


DAMAGED = [
    pytest.param(_truncated(100), "SQLITE_CORRUPT", id="truncated-to-header"),
    pytest.param(_truncated(1000), "SQLITE_CORRUPT", id="truncated-1k"),
    pytest.param(_truncated(None), "SQLITE_CORRUPT", id="truncated-half"),
    pytest.param(_truncated(40), "less than the 100-byte header", id="truncated-in-header"),
    pytest.param(_patched(4096 * 2, b"\xff" * 200), "SQLITE_CORRUPT", id="corrupt-page"),
    pytest.param(_patched(16, b"\x00\x03"), "page size 3", id="bad-page-size"),
    pytest.param(_patched(18, b"\x09"), "write version 9", id="bad-write-version"),
    pytest.param(_patched(19, b"\x07"), "read version 7", id="bad-read-version"),
    pytest.param(_patched(28, (999_999).to_bytes(4, "big")), "SQLITE_CORRUPT", id="page-count"),
    pytest.param(_patched(100, b"\x0d" * 3000), "SQLITE_CORRUPT", id="bad-schema-page"),
    pytest.param(_patched(0, b"SQLite format 2\x00"), "bad header", id="bad-magic"),
    pytest.param(_hot_journal, "hot journal", id="hot-journal"),
]


def _run(
    argv: list[str], cwd: Path, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollproof", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=preexec,  # the limit is the point of the test
    )


def _change(root: Path, text: str = CHANGE) -> Path:
    d = root / "change"
    d.mkdir(exist_ok=True)
    (d / "change.toml").write_text(text)
    return d


def _one_line(proc: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert words in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("make", "words"), DAMAGED)
@pytest.mark.parametrize("command", ["rehearse", "fingerprint"])
def test_a_damaged_source_is_exit_2_with_the_reason(
    tmp_path: Path, make: Callable[[Path], None], words: str, command: str
) -> None:
    source = tmp_path / "src.db"
    make(source)
    before = source.read_bytes()
    argv = (
        ["rehearse", str(_change(tmp_path)), "--source", str(source), "--out", "out"]
        if command == "rehearse"
        else ["fingerprint", str(source)]
    )
    proc = _run(argv, tmp_path)
    if command == "fingerprint" and words == "hot journal":
        words = "source"  # fingerprint names the file and SQLite's own reason
    _one_line(proc, 2, words)
    assert not (tmp_path / "out").exists()
    assert source.read_bytes() == before


@pytest.mark.parametrize("command", ["rehearse", "fingerprint"])
def test_the_control_source_passes(tmp_path: Path, command: str) -> None:
    source = tmp_path / "src.db"
    before = _good(source)
    argv = (
        ["rehearse", str(_change(tmp_path)), "--source", str(source), "--out", "out"]
        if command == "rehearse"
        else ["fingerprint", str(source)]
    )
    proc = _run(argv, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert source.read_bytes() == before


def test_an_empty_file_is_an_empty_database_for_a_first_migration(tmp_path: Path) -> None:
    source = tmp_path / "new.db"
    source.write_bytes(b"")
    change = _change(
        tmp_path,
        'apply_sql = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"\n'
        'revert_sql = "DROP TABLE users;"\n[surfaces]\nwrites = ["users"]\n',
    )
    proc = _run(["rehearse", str(change), "--source", str(source), "--out", "out"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "overall: PASS" in proc.stdout
    assert source.read_bytes() == b""


def _file_size_limit(limit: int) -> Callable[[], None]:
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        pytest.param(200_000, "a file grew past the size limit", id="snapshot-copy"),
        pytest.param(2_500_000, "I/O error", id="clone-grows-under-the-change"),
    ],
)
def test_a_full_disk_is_the_machine_not_the_change(tmp_path: Path, limit: int, words: str) -> None:
    """A file-size limit stands in for a full disk: writes past it fail as ENOSPC would."""
    source = tmp_path / "src.db"
    before = _good(source, rows=4000)
    change = _change(
        tmp_path,
        'apply_sql = "WITH RECURSIVE n(i) AS (SELECT 5000 UNION ALL SELECT i + 1 FROM n '
        'WHERE i < 9000) INSERT INTO t SELECT i, randomblob(1000) FROM n;"\n'
        'revert_sql = "DELETE FROM t WHERE x >= 5000;"\n[surfaces]\nwrites = ["t"]\n',
    )
    proc = _run(
        ["rehearse", str(change), "--source", str(source), "--out", "out"],
        tmp_path,
        preexec=_file_size_limit(limit),
    )
    _one_line(proc, 4, words)
    assert not (tmp_path / "out").exists()
    assert source.read_bytes() == before


def test_a_workdir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "prod").mkdir()
    source = tmp_path / "prod" / "src.db"  # the workdir must be outside the source's directory
    _good(source, rows=10)
    (tmp_path / "afile").write_text("x")
    proc = _run(
        [
            "rehearse",
            str(_change(tmp_path)),
            "--source",
            str(source),
            "--out",
            "out",
            "--workdir",
            str(tmp_path / "afile"),
        ],
        tmp_path,
    )
    _one_line(proc, 2, "afile: not a directory")
    assert os.listdir(tmp_path / "change") == ["change.toml"]
