"""Fuzzing the inputs a user types: change.toml, DSNs and command lines.

Whatever the bytes, rollproof answers with a documented exit code, one clear line on stderr and
no traceback: never 70 (a bug) and never 0 for an input that is not a usable change or source.
`main(argv)` runs in process (the CLI's one `try` is what is under test), with hypothesis
generating the input; a control of each family passes.
"""

from __future__ import annotations

import os
import sqlite3
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollproof.cli import main

DOCUMENTED = {1, 2, 3, 4}
GOOD_TOML = (
    'apply_sql = "INSERT INTO t VALUES (2);"\nrevert_sql = "DELETE FROM t WHERE x = 2;"\n'
    '[surfaces]\nwrites = ["t"]\n'
)
_SETTINGS = settings(
    max_examples=int(os.environ.get("ROLLPROOF_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    with sqlite3.connect(src / "s.db") as conn:
        conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    (tmp_path / "change").mkdir()
    return tmp_path


def _one_clean_line(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


_TOML_PIECES = st.sampled_from(
    [
        "apply_sql = ",
        "revert_sql = ",
        "verify_sql = ",
        "apply = ",
        "revert = ",
        "id = ",
        "no_mutation = ",
        "strict_sequences = ",
        "[surfaces]\n",
        "[connection]\n",
        "reads = ",
        "writes = ",
        "foreign_keys = ",
        '"INSERT INTO t VALUES (3);"',
        '"../x.sql"',
        '"/etc/passwd"',
        "true",
        "false",
        "1",
        "[",
        "]",
        "{",
        "}",
        '"',
        "'",
        "\n",
        "=",
        ",",
        '["t"]',
        "[[x]]\n",
        "\x00",
        "\ufeff",
        "é",
        "1e400",
        "nan",
        "inf",
        '"""',
        "#",
    ]
)


@_SETTINGS
@given(st.lists(_TOML_PIECES | st.text(max_size=8), max_size=30).map("".join))
def test_any_change_toml_gets_a_documented_exit(
    world: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    (world / "change" / "change.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
    code = main(
        [
            "rehearse",
            str(world / "change"),
            "--source",
            str(world / "src" / "s.db"),
            "--out",
            str(world / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code in DOCUMENTED | {0}, err
    if code != 0:
        _one_clean_line(err)
    if (world / "out").exists():
        import shutil

        shutil.rmtree(world / "out")


_DSN_PIECES = st.sampled_from(
    [
        "sqlite:",
        "sqlite://",
        "sqlite:///",
        "sqlite:////",
        "postgresql://",
        "postgres://",
        "mysql://",
        "file:",
        "?",
        "#",
        "%",
        "%zz",
        "%00",
        "@",
        ":",
        "user:pass@",
        "host=",
        "password=",
        "'",
        " ",
        "\n",
        "..",
        "/",
        "s.db",
        "nope.db",
        ":memory:",
        "~",
        "\x00",
        "é",
        "[::1]",
        ":99999",
        "?mode=rw",
        "?sslmode=require",
    ]
)


@_SETTINGS
@given(
    st.lists(_DSN_PIECES | st.text(alphabet=string.printable, max_size=6), max_size=10).map("".join)
)
def test_any_source_dsn_gets_a_documented_exit(
    world: Path, capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    (world / "change" / "change.toml").write_text(GOOD_TOML)
    code = main(
        [
            "rehearse",
            str(world / "change"),
            "--source",
            dsn,
            "--out",
            str(world / "out"),
            "--scratch",
            "postgresql://127.0.0.1:1/none",
        ]
    )
    err = capsys.readouterr().err
    assert code in DOCUMENTED, (dsn, err)
    _one_clean_line(err)
    assert not (world / "out").exists()


_ARGS = st.sampled_from(
    [
        "rehearse",
        "validate",
        "fingerprint",
        "rerun",
        "surfaces",
        "gc",
        "status",
        "ledger",
        "verify",
        "grant",
        "issue",
        "--source",
        "--out",
        "--legs",
        "--json",
        "--policy",
        "--lane",
        "--grant",
        "--key",
        "read-only,transaction",
        "bogus-leg",
        "",
        "-",
        "--",
        "/dev/null",
        "/nonexistent",
        "x=y",
        "--max-examples",
        "-1",
        "99999999999999999999",
    ]
)


@_SETTINGS
@given(st.lists(_ARGS, min_size=1, max_size=6))
def test_any_command_line_gets_a_documented_exit(
    world: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    monkeypatch.chdir(world)
    code = main(argv)
    captured = capsys.readouterr()
    assert code in DOCUMENTED | {0}, (argv, captured.err)
    assert "Traceback" not in captured.err


def test_the_controls_pass(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (world / "change" / "change.toml").write_text(GOOD_TOML)
    code = main(
        [
            "rehearse",
            str(world / "change"),
            "--source",
            f"sqlite:///{world / 'src' / 's.db'}",
            "--out",
            str(world / "out"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert main(["validate", str(world / "out")]) == 0
