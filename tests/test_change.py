"""Loading change.toml: every bad input is refused naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.core.change import load_change
from rollproof.core.errors import ChangeError


def write(cdir: Path, toml: str, files: dict[str, str | bytes] | None = None) -> Path:
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "change.toml").write_text(toml)
    for name, body in (files or {}).items():
        target = cdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(body, bytes):
            target.write_bytes(body)
        else:
            target.write_text(body)
    return cdir


GOOD_FILES = {"apply.sql": "CREATE TABLE t (x);\n", "revert.sql": "DROP TABLE t;\n"}
GOOD = 'apply = "apply.sql"\nrevert = "revert.sql"\n'


def test_loads_files_inline_surfaces_and_settings(tmp_path: Path) -> None:
    cdir = write(
        tmp_path / "add-t",
        GOOD
        + 'verify_sql = "SELECT 1;"\nstrict_sequences = true\n'
        + '[surfaces]\nreads = ["a"]\nwrites = ["t"]\n[connection]\nforeign_keys = true\n',
        GOOD_FILES,
    )
    change = load_change(cdir)
    assert change.id == "add-t"
    assert change.apply.text == "CREATE TABLE t (x);\n"
    assert change.apply.path == "apply.sql"
    assert change.verify is not None
    assert change.verify.path is None
    assert change.verify.text == "SELECT 1;"
    assert change.strict_sequences is True
    assert change.no_mutation is False
    assert change.reads == ("a",)
    assert change.writes == ("t",)
    assert change.connection == {"foreign_keys": True, "recursive_triggers": False}
    assert set(change.files) == {"change.toml", "apply.sql", "revert.sql"}
    assert change.content_id.startswith("sha256:")
    assert len(change.content_id) == len("sha256:") + 64


def test_load_accepts_the_toml_path_itself(tmp_path: Path) -> None:
    cdir = write(tmp_path / "c", GOOD, GOOD_FILES)
    assert load_change(cdir / "change.toml").content_id == load_change(cdir).content_id


def test_content_id_covers_script_bytes(tmp_path: Path) -> None:
    a = load_change(write(tmp_path / "c", GOOD, GOOD_FILES))
    (tmp_path / "c" / "revert.sql").write_text("DROP TABLE t;\r\n")  # only a line ending
    b = load_change(tmp_path / "c")
    assert a.content_id != b.content_id
    (tmp_path / "c" / "revert.sql").write_text("DROP TABLE t;\n")
    assert load_change(tmp_path / "c").content_id == a.content_id


def test_content_id_covers_declared_flags(tmp_path: Path) -> None:
    a = load_change(write(tmp_path / "c", GOOD, GOOD_FILES))
    b = load_change(write(tmp_path / "c", GOOD + "strict_sequences = true\n"))
    assert a.content_id != b.content_id


@pytest.mark.parametrize(
    ("toml", "files", "message"),
    [
        pytest.param(
            GOOD + "strict_sequence = true\n",
            GOOD_FILES,
            "strict_sequence: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            GOOD + "no_mutation = 1\n",
            GOOD_FILES,
            "no_mutation: must be true or false",
            id="wrong-type-flag",
        ),
        pytest.param(
            'apply = "missing.sql"\nrevert = "revert.sql"\n',
            GOOD_FILES,
            "apply: file 'missing.sql' does not exist",
            id="missing-apply-file",
        ),
        pytest.param(
            'revert = "revert.sql"\n',
            GOOD_FILES,
            "apply: missing: give apply (a file) or apply_sql (inline SQL)",
            id="no-apply",
        ),
        pytest.param(
            'apply_sql = "  -- nothing\\n ; "\nrevert = "revert.sql"\n',
            GOOD_FILES,
            "apply_sql: is empty: it has no SQL statement",
            id="empty-apply",
        ),
        pytest.param(
            'apply = "apply.sql"\nrevert_sql = ""\n',
            GOOD_FILES,
            "revert_sql: is empty: only a no_mutation change may have no revert",
            id="empty-revert",
        ),
        pytest.param(
            GOOD + 'apply_sql = "SELECT 1"\n',
            GOOD_FILES,
            "apply: give either apply or apply_sql, not both",
            id="both-forms",
        ),
        pytest.param(
            'apply = "../escape.sql"\nrevert = "revert.sql"\n',
            GOOD_FILES,
            "apply: '../escape.sql' is outside the change directory",
            id="path-escape",
        ),
        pytest.param(
            GOOD + '[surfaces]\nwrites = "t"\n',
            GOOD_FILES,
            "surfaces.writes: must be a list of object names",
            id="surfaces-not-list",
        ),
        pytest.param(
            GOOD + "[surfaces]\ndeletes = []\n",
            GOOD_FILES,
            "surfaces.deletes: unknown key",
            id="surfaces-unknown",
        ),
        pytest.param(
            GOOD + "[connection]\njournal_mode = true\n",
            GOOD_FILES,
            "connection.journal_mode: unknown key",
            id="connection-unknown",
        ),
        pytest.param(
            GOOD + '[connection]\nforeign_keys = "on"\n',
            GOOD_FILES,
            "connection.foreign_keys: must be true or false",
            id="connection-type",
        ),
        pytest.param(GOOD + 'id = "../x"\n', GOOD_FILES, "id: must be 1-128 letters", id="bad-id"),
        pytest.param(GOOD + "apply = \n", GOOD_FILES, "invalid TOML", id="invalid-toml"),
        pytest.param(
            'apply = "apply.sql"\nrevert = "revert.sql"\n',
            {"apply.sql": b"\xff\xfe", "revert.sql": "x"},
            "apply: file 'apply.sql' is not UTF-8 text",
            id="apply-not-utf8",
        ),
    ],
)
def test_bad_change_is_refused_naming_file_and_key(
    tmp_path: Path, toml: str, files: dict[str, str | bytes], message: str
) -> None:
    cdir = write(tmp_path / "c", toml, files)
    with pytest.raises(ChangeError) as info:
        load_change(cdir)
    assert str(info.value).startswith(str(cdir / "change.toml") + ": ")
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_missing_change_toml(tmp_path: Path) -> None:
    with pytest.raises(ChangeError, match=r"change\.toml: no such file$"):
        load_change(tmp_path)


def test_no_mutation_change_may_have_empty_revert(tmp_path: Path) -> None:
    cdir = write(tmp_path / "c", 'apply_sql = "SELECT 1;"\nrevert_sql = ""\nno_mutation = true\n')
    assert load_change(cdir).no_mutation is True


def test_cli_bad_change_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cdir = write(tmp_path / "c", GOOD + "bogus = 1\n", GOOD_FILES)
    code = main(["rehearse", str(cdir), "--source", str(tmp_path / "none.db")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"rollproof: {cdir / 'change.toml'}: bogus: unknown key"
    ]
