"""Input files a user names are read only when they are regular files, never blocking, capped.

Each bad input runs the real `rollproof rehearse` in a subprocess with a timeout (a hang is a
failure, not a wait) and asserts exit 2 with one line on stderr naming the file and the reason,
and no traceback. The control row, a good change, rehearses (exit 0).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rollproof.core.change import MAX_CHANGE_TOML_BYTES, load_change
from rollproof.core.errors import ChangeError
from rollproof.core.inputs import InputFileError, read_input

GOOD_TOML = """\
apply = "apply.sql"
revert = "revert.sql"
[surfaces]
writes = ["t"]
"""


def _change(root: Path) -> Path:
    d = root / "change"
    d.mkdir()
    (d / "change.toml").write_text(GOOD_TOML)
    (d / "apply.sql").write_text("INSERT INTO t VALUES (2);\n")
    (d / "revert.sql").write_text("DELETE FROM t WHERE x = 2;\n")
    return d


def _source(root: Path) -> Path:
    import sqlite3

    db = root / "src" / "s.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    return db


def _fifo_apply(d: Path) -> str:
    (d / "apply.sql").unlink()
    os.mkfifo(d / "apply.sql")
    return "change.toml: apply: file 'apply.sql' is a FIFO, not a regular file"


def _fifo_toml(d: Path) -> str:
    (d / "change.toml").unlink()
    os.mkfifo(d / "change.toml")
    return "change.toml: is a FIFO, not a regular file"


def _dev_zero_toml(d: Path) -> str:
    (d / "change.toml").unlink()
    (d / "change.toml").symlink_to("/dev/zero")
    return "change.toml: is a character device, not a regular file"


def _dev_zero_script(d: Path) -> str:
    (d / "revert.sql").unlink()
    (d / "revert.sql").symlink_to("/dev/zero")
    # The symlink resolves outside the change directory: refused before it is opened.
    return "change.toml: revert: 'revert.sql' is outside the change directory"


def _directory_script(d: Path) -> str:
    (d / "apply.sql").unlink()
    (d / "apply.sql").mkdir()
    return "change.toml: apply: file 'apply.sql' is a directory, not a regular file"


def _deep_toml(d: Path) -> str:
    depth = 60_000
    (d / "change.toml").write_text("x = " + "[" * depth + "]" * depth + "\n")
    return "change.toml: invalid TOML: nested too deeply"


def _huge_toml(d: Path) -> str:
    (d / "change.toml").write_text(GOOD_TOML + "#" * MAX_CHANGE_TOML_BYTES + "\n")
    size = (d / "change.toml").stat().st_size
    return f"change.toml: is {size} bytes; the limit is {MAX_CHANGE_TOML_BYTES}"


def _non_utf8_script(d: Path) -> str:
    (d / "apply.sql").write_bytes(b"INSERT INTO t VALUES (2); -- \xff\xfe\n")
    return "change.toml: apply: file 'apply.sql' is not UTF-8 text"


BAD: list[tuple[str, Callable[[Path], str]]] = [
    ("fifo-apply", _fifo_apply),
    ("fifo-change-toml", _fifo_toml),
    ("dev-zero-change-toml", _dev_zero_toml),
    ("dev-zero-script", _dev_zero_script),
    ("directory-script", _directory_script),
    ("toml-nested-60k", _deep_toml),
    ("toml-over-cap", _huge_toml),
    ("script-not-utf8", _non_utf8_script),
]


def _rehearse(change: Path, source: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "rollproof",
            "rehearse",
            str(change),
            "--source",
            f"sqlite:///{source}",
            "--out",
            str(cwd / "packet"),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("name", "make"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_input_file_exits_2_with_one_line(
    tmp_path: Path, name: str, make: Callable[[Path], str]
) -> None:
    change = _change(tmp_path)
    source = _source(tmp_path)
    expected = make(change)
    proc = _rehearse(change, source, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].endswith(expected), lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "packet").exists()


def test_the_control_change_rehearses(tmp_path: Path) -> None:
    change = _change(tmp_path)
    source = _source(tmp_path)
    before = source.read_bytes()
    proc = _rehearse(change, source, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "packet" / "report.json").is_file()
    assert source.read_bytes() == before


def test_read_input_refuses_a_file_that_is_over_the_limit_exactly_by_one(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 11)
    with pytest.raises(InputFileError, match=r"f: is 11 bytes; the limit is 10$"):
        read_input(path, limit=10)
    path.write_bytes(b"x" * 10)
    assert read_input(path, limit=10) == b"x" * 10


def test_load_change_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    change = _change(tmp_path)
    _fifo_apply(change)
    with pytest.raises(ChangeError, match=r"is a FIFO, not a regular file$"):
        load_change(change)


def test_a_policy_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    from rollproof.core.policy import PolicyError, load_policy

    os.mkfifo(tmp_path / "rollproof.toml")
    with pytest.raises(PolicyError, match=r"rollproof\.toml: is a FIFO, not a regular file$"):
        load_policy(tmp_path / "rollproof.toml")
    (tmp_path / "good.toml").write_text('[forbidden]\nobjects = ["staff"]\n')
    assert load_policy(tmp_path / "good.toml").forbidden_objects == ("staff",)


def test_a_key_file_that_is_a_device_is_refused(tmp_path: Path) -> None:
    from rollproof.core.keys import KeyFileError, load_public_key

    (tmp_path / "op.pub").symlink_to("/dev/zero")
    with pytest.raises(KeyFileError, match=r"op\.pub: key file is a character device, not a"):
        load_public_key(tmp_path / "op.pub")
