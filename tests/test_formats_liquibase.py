"""Liquibase formatted SQL changelogs: changesets, rollbacks, attributes, errors, rehearsal.

The changelog `tests/data/formats/liquibase/store/changelog.sql` has a single-line rollback
(ann:1), a `/* liquibase rollback */` block (ann:2), a `runInTransaction:false` changeset
(bob:3) and one with preconditions and a context (bob:4).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.core.errors import ExitCode
from rollproof.formats.changes import change_for
from rollproof.formats.detect import detect, load_project
from rollproof.formats.liquibase import dbms_matches
from rollproof.formats.model import FormatError
from rollproof.verify.reader import validate_packet

STORE = Path(__file__).parent / "data" / "formats" / "liquibase" / "store"
HEADER = "--liquibase formatted sql\n\n"


def test_changesets_rollbacks_and_attributes() -> None:
    assert detect(STORE) == "liquibase"
    p = load_project(STORE)
    assert p.format == "liquibase"
    assert p.bookkeeping == "DATABASECHANGELOG"
    assert [m.id for m in p.migrations] == ["ann:1", "ann:2", "bob:3", "bob:4"]
    one, two, three, four = p.migrations
    assert one.record == ("1", "ann", "changelog.sql")
    assert one.name == "customers, with the first three of them"  # its --comment
    # A single-line rollback is that line; the comment and rollback lines are not SQL to run,
    # and are blanked so that the apply text keeps the file's line numbers.
    assert one.revert is not None
    assert one.revert.text == "DROP TABLE customers;\n"
    assert one.revert.line == 14
    assert one.apply.line == 4
    lines = STORE.joinpath("changelog.sql").read_text().splitlines()
    assert lines[one.apply.line - 1 + 1] == one.apply.text.splitlines()[1]  # CREATE TABLE line
    assert "--rollback" not in one.apply.text
    assert "--comment" not in one.apply.text
    # A block's lines are joined as Liquibase's parser joins them: with no line break.
    assert two.revert is not None
    assert two.revert.text == "DROP INDEX ix_orders_customer;DROP TABLE orders;"
    assert two.revert.line == 24
    assert "liquibase rollback" not in two.apply.text
    assert "DROP TABLE orders" not in two.apply.text
    assert three.no_transaction == "liquibase `runInTransaction:false` (changelog.sql:28)"
    assert one.no_transaction is None
    assert four.notes == (
        "preconditions onFail:MARK_RAN onError:HALT (changelog.sql:33): reported, not evaluated",
        "precondition-sql-check expectedResult:0 SELECT count(*) FROM orders WHERE "
        "total_cents < 0 (changelog.sql:34): reported, not evaluated",
        "context:production (changelog.sql:32): Liquibase runs it unless given "
        "--contexts/--labels that exclude it",
    )
    change = change_for(p, two)
    # Assembled from the changelog's lines, so inline: no selection of lines says it.
    assert set(change.files) == {"change.toml"}
    assert change.apply.path is None
    assert change.apply.text == two.apply.text
    toml = change.files["change.toml"].decode()
    digest = hashlib.sha256(STORE.joinpath("changelog.sql").read_bytes()).hexdigest()
    assert f"revert its rollback, inline, from changelog.sql (sha256 {digest})" in toml


def write(tmp_path: Path, body: str, name: str = "changelog.sql") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body)
    return path


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("--changeset ann-without-id\nSELECT 1;\n", 3, "not a changeset line: --changeset "),
        ("CREATE TABLE t (a);\n--changeset ann:1\nSELECT 1;\n", 3, "SQL before the first"),
        (
            "--changeset ann:1\nCREATE TABLE t (a);\n/* liquibase rollback\nDROP TABLE t;\n",
            5,
            "the `/* liquibase rollback` block is not closed",
        ),
        (
            "--changeset ann:1\n--precondition-row-count 3\nCREATE TABLE t (a);\n",
            4,
            "the 'row-count' precondition type is not supported",
        ),
        (
            "--property name:schema value:app\n--changeset ann:1\nSELECT 1;\n",
            3,
            "`--property` is not supported by rollproof: it substitutes no ${...}",
        ),
        (
            "--changeset ann:1\nCREATE TABLE ${schema}.t (a);\n",
            4,
            "changeset ann:1: `${...}` is a Liquibase property, which rollproof does not "
            "substitute",
        ),
        ("--changeset ann:1\n--comment: nothing\n\n", 3, "changeset ann:1 has no SQL"),
        (
            "--changeset ann:1 endDelimiter:GO\nCREATE TABLE t (a)\nGO\n",
            3,
            "changeset ann:1: endDelimiter:GO is not supported by rollproof",
        ),
        (
            "--changeset ann:1\nCREATE TABLE t (a);\n--changeset ann:1\nCREATE TABLE u (a);\n",
            5,
            "changeset ann:1 is also at ",
        ),
        ("--changeset ann:1\nSELECT 1;\n-rollback DROP TABLE t;\n", 5, "not a rollback line"),
    ],
)
def test_malformed_changelogs_name_file_and_line(
    tmp_path: Path, body: str, line: int, message: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(FormatError) as e:
        load_project(tmp_path)
    assert str(e.value).startswith(f"{path}:{line}: {message}")
    assert e.value.exit_code is ExitCode.USAGE


def test_rollback_not_required_and_rollback_by_changeset(tmp_path: Path) -> None:
    write(
        tmp_path,
        "--changeset ann:1\nCREATE TABLE t (a);\n--rollback DROP TABLE t;\n\n"
        "--changeset ann:2\nINSERT INTO t VALUES (1);\n--rollback not required\n\n"
        "--changeset ann:3\nDROP TABLE t;\n"
        "--rollback changesetId:1 changesetAuthor:ann\n",
    )
    _one, two, three = load_project(tmp_path).migrations
    assert not two.reversible
    assert two.why_not_reversible() == (
        "its rollback is `not required` (changelog.sql:9): Liquibase rolls it back by doing nothing"
    )
    assert three.revert is not None
    assert three.revert.text.strip() == "CREATE TABLE t (a);"
    assert three.revert.line == 4
    write(tmp_path, "--changeset ann:1\nSELECT 1;\n--rollback changesetId:9 changesetAuthor:x\n")
    with pytest.raises(FormatError, match=r"changelog\.sql:5: rollback changeset x:9 "):
        load_project(tmp_path)


def test_ignore_lines_keep_line_numbers_and_comments_stay_sql(tmp_path: Path) -> None:
    write(
        tmp_path,
        "--changeset ann:1\n"
        "-- include the admin user (an ordinary comment)\n"
        "--ignoreLines:start\nDROP TABLE nothing;\n--ignoreLines:end\n"
        "--ignoreLines:1\nDROP TABLE nothing_either;\n"
        "CREATE TABLE t (a);\n",
    )
    (m,) = load_project(tmp_path).migrations
    assert "nothing" not in m.apply.text
    lines = m.apply.text.splitlines()
    assert lines[0] == "-- include the admin user (an ordinary comment)"
    assert m.apply.line + lines.index("CREATE TABLE t (a);") == 10  # its line in the file
    write(tmp_path, "--changeset ann:1\n--include file:other.sql\nSELECT 1;\n")
    with pytest.raises(FormatError, match=r"changelog\.sql:4: `--include` is not supported"):
        load_project(tmp_path)


def test_dbms_and_ignore_filter_changesets_as_liquibase_does(tmp_path: Path) -> None:
    assert dbms_matches(None)
    assert dbms_matches("sqlite, postgresql")
    assert not dbms_matches("postgresql")
    assert not dbms_matches("!sqlite")
    assert dbms_matches("!h2")
    assert not dbms_matches("none")
    assert dbms_matches("all")
    write(
        tmp_path,
        "--changeset ann:1 dbms:postgresql\nCREATE SEQUENCE s;\n"
        "--changeset ann:2 dbms:sqlite,h2\nCREATE TABLE t (a);\n"
        "--changeset ann:3 ignore:true\nCREATE TABLE u (a);\n",
    )
    assert [m.id for m in load_project(tmp_path).migrations] == ["ann:2"]


def test_rehearse_dir_runs_each_changeset_at_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "prod" / "store.db"
    source.parent.mkdir()
    sqlite3.connect(source).close()
    out = tmp_path / "packets"
    code = main(["rehearse-dir", str(STORE), "--source", str(source), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert [line.split()[0] for line in text.splitlines() if line[:1] != " "][:5] == ["PASS"] * 5
    assert "note: preconditions onFail:MARK_RAN onError:HALT (changelog.sql:33)" in text
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "1-ann-1",
        "2-ann-2",
        "3-bob-3",
        "4-bob-4",
        "range-ann-1-to-bob-4",
    ]
    for packet in (d for d in out.iterdir() if d.is_dir()):
        validate_packet(packet)
    report = json.loads((out / "3-bob-3" / "report.json").read_text())
    legs = {leg["name"]: leg for leg in report["legs"]}
    assert legs["transaction"]["verdict"] == "NOT_APPLICABLE"
    assert "liquibase `runInTransaction:false` (changelog.sql:28)" in legs["transaction"]["reason"]
    assert legs["revert"]["verdict"] == "PASS"
    block = json.loads((out / "2-ann-2" / "report.json").read_text())
    assert {leg["name"]: leg["verdict"] for leg in block["legs"]}["revert"] == "PASS"
