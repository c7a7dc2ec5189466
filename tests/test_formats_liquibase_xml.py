"""Liquibase XML changelogs (`<changeSet>` with `<sql>` and `<rollback>`), read with expat.

`tests/data/formats/liquibase/xmlstore/changelog.xml`: changeset 1 creates `orders` with a
note on 20 rows, 2 drops the note and its `<rollback>` adds the column back empty, 3 is
`runInTransaction="false"`, 4 is for PostgreSQL only (skipped on SQLite, as Liquibase skips it),
5 has an empty `<rollback/>`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.formats.bookkeeping import deployed_ids
from rollproof.formats.detect import load_project
from rollproof.formats.model import FormatError
from rollproof.verify.reader import validate_packet

XMLSTORE = Path(__file__).parent / "data" / "formats" / "liquibase" / "xmlstore"


def _source(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "prod" / "prod.db"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) "
        "INSERT INTO users SELECT i, 'user' || i FROM n;" + extra
    )
    conn.close()
    return path


def test_xml_changelog_loads_changesets_rollbacks_and_markers() -> None:
    p = load_project(XMLSTORE)  # detected as liquibase from the root element
    assert p.format == "liquibase"
    assert [m.id for m in p.migrations] == ["ann:1", "ann:2", "bob:3", "bob:5"]
    one, two, three, five = p.migrations
    assert one.name == "Create orders"
    assert one.apply.text.startswith("CREATE TABLE orders (id INTEGER PRIMARY KEY")
    assert one.apply.text.count(";") == 2  # each <sql> ended with `;`
    assert one.revert is not None
    assert one.revert.text == "DROP TABLE orders;\n"
    assert two.revert is not None
    assert two.revert.text == "ALTER TABLE orders ADD COLUMN note TEXT;\n"
    assert three.no_transaction == 'liquibase runInTransaction="false" (changelog.xml:23)'
    assert three.notes == ("preConditions (changelog.xml:24): reported, not evaluated",)
    assert five.revert is None
    assert five.why_not_reversible() == (
        "its <rollback> is empty (changelog.xml:35): Liquibase rolls it back by doing nothing"
    )
    assert one.record == ("1", "ann", "changelog.xml")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '<changeSet id="1" author="a"><createTable tableName="t"/></changeSet>',
            r"changelog\.xml:3: changeSet a:1: <createTable> is a Liquibase change type",
        ),
        ('<include file="other.xml"/>', r"changelog\.xml:3: <include> is not supported"),
        (
            '<changeSet id="1" author="a"><sql>SELECT ${x};</sql></changeSet>',
            r"changelog\.xml:3: changeSet a:1: `\$\{...\}` is a Liquibase property",
        ),
        ('<changeSet id="1"><sql>SELECT 1;</sql></changeSet>', r"needs id and author"),
        ('<changeSet id="1" author="a"><sql>SELECT 1;</sql>', r"not well-formed XML"),
    ],
)
def test_xml_changelog_refusals_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "changelog.xml").write_text(
        '<?xml version="1.0"?>\n<databaseChangeLog xmlns="http://www.liquibase.org/xml/ns/dbchangelog">\n'
        f"{body}\n</databaseChangeLog>\n"
    )
    with pytest.raises(FormatError, match=message):
        load_project(tmp_path)


def test_xml_changelog_refuses_a_doctype(tmp_path: Path) -> None:
    (tmp_path / "changelog.xml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "aaaa">]>\n'
        '<databaseChangeLog><changeSet id="1" author="a"><sql>SELECT 1;</sql></changeSet>'
        "</databaseChangeLog>\n"
    )
    with pytest.raises(FormatError, match=r"changelog\.xml:2: a DOCTYPE is refused"):
        load_project(tmp_path, "liquibase")


def test_xml_changelog_rehearsed_and_pending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Changeset 2's rollback loses the 20 notes: at its position it FAILS; DATABASECHANGELOG
    rows with FILENAME changelog.xml say what is deployed."""
    source = _source(tmp_path)
    out = tmp_path / "packets"
    code = main(["rehearse-dir", str(XMLSTORE), "--source", str(source), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 1, text
    lines = [line for line in text.splitlines() if not line.startswith(" ")]
    assert [line.split()[0] for line in lines[:5]] == ["PASS", "FAIL", "PASS", "PASS", "PASS"]
    assert "table orders: 20 rows differ; note: 20 values lost" in lines[1]
    report = json.loads((out / "3-bob-3" / "report.json").read_text())
    legs = {leg["name"]: leg for leg in report["legs"]}
    assert legs["transaction"]["verdict"] == "NOT_APPLICABLE"
    assert validate_packet(out).overall.value == "FAIL"  # the range packet as a whole
    deployed = _source(tmp_path / "b")
    conn = sqlite3.connect(deployed)
    conn.executescript(
        "CREATE TABLE DATABASECHANGELOG (ID TEXT, AUTHOR TEXT, FILENAME TEXT, "
        "DATEEXECUTED TEXT, ORDEREXECUTED INTEGER, EXECTYPE TEXT);"
        "INSERT INTO DATABASECHANGELOG VALUES "
        "('1', 'ann', 'db/changelog.xml', '2024-01-01', 1, 'EXECUTED');"
    )
    conn.close()
    assert deployed_ids(load_project(XMLSTORE), str(deployed)) == frozenset({"ann:1"})


def test_dbms_is_evaluated_for_the_sources_dialect() -> None:
    """Changeset 4 is `dbms="postgresql"`: skipped when loaded for SQLite, kept for PostgreSQL
    (rehearse-dir and plan load the project for the source's dialect)."""
    assert [m.id for m in load_project(XMLSTORE).migrations] == ["ann:1", "ann:2", "bob:3", "bob:5"]
    pg = load_project(XMLSTORE, dialect="postgresql")
    assert [m.id for m in pg.migrations] == ["ann:1", "ann:2", "bob:3", "bob:4", "bob:5"]
    assert pg.migrations[3].apply.text == "CREATE EXTENSION pg_trgm;\n"
    assert pg.options["dialect"] == "postgresql"
