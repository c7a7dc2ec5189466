"""Liquibase YAML and JSON changelogs (`changeSet` with `sql` changes and a `rollback`).

`tests/data/formats/liquibase/yamlstore/changelog.yaml` and `jsonstore/changelog.json` hold the
same three changesets: 1 creates `orders` with a note on 20 rows, 2 drops the note and its
rollback adds the column back empty, 3 is `runInTransaction: false`. YAML is read with
`yaml.safe_load`, JSON with the standard library; lines are found in the text.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.formats.detect import detect, load_project
from rollproof.formats.model import FormatError
from rollproof.verify.reader import validate_packet

DATA = Path(__file__).parent / "data" / "formats" / "liquibase"
STORES = {"yaml": DATA / "yamlstore", "json": DATA / "jsonstore"}
LINES = {"yaml": 23, "json": 25}


def _source(tmp_path: Path) -> Path:
    path = tmp_path / "prod" / "prod.db"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) "
        "INSERT INTO users SELECT i, 'user' || i FROM n;"
    )
    conn.close()
    return path


@pytest.mark.parametrize("kind", ["yaml", "json"])
def test_structured_changelog_loads_like_xml(kind: str) -> None:
    store = STORES[kind]
    assert detect(store) == "liquibase"
    p = load_project(store)
    assert [m.id for m in p.migrations] == ["ann:1", "ann:2", "bob:3"]
    one, two, three = p.migrations
    assert one.name == "Create orders"
    assert one.apply.text.startswith("CREATE TABLE orders (id INTEGER PRIMARY KEY")
    assert one.apply.text.count(";") == 2  # each sql change ended with `;`
    assert one.revert is not None
    assert one.revert.text == "DROP TABLE orders;\n"
    assert two.revert is not None
    assert two.revert.text == "ALTER TABLE orders ADD COLUMN note TEXT;\n"
    assert three.no_transaction == (
        f'liquibase runInTransaction="false" (changelog.{kind}:{LINES[kind]})'
    )
    assert one.record == ("1", "ann", f"changelog.{kind}")


@pytest.mark.parametrize("kind", ["yaml", "json"])
def test_rehearse_dir_fails_the_lossy_rollback(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "packets"
    code = main(
        ["rehearse-dir", str(STORES[kind]), "--source", str(_source(tmp_path)), "--out", str(out)]
    )
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith(" ")]
    assert code == 1
    assert [ln.split()[0] for ln in lines[:4]] == ["PASS", "FAIL", "PASS", "PASS"]
    assert "table orders: 20 rows differ; note: 20 values lost (set before, NULL now)" in lines[1]
    assert validate_packet(out).overall.value == "FAIL"


YAML_BAD = {
    "change type": (
        "databaseChangeLog:\n"
        "  - changeSet:\n"
        "      id: '1'\n"
        "      author: ann\n"
        "      changes:\n"
        "        - createTable:\n"
        "            tableName: t\n",
        6,
        "changeSet ann:1: createTable is a Liquibase change type whose SQL Liquibase "
        "generates; rollproof rehearses only sql (or formatted SQL)",
    ),
    "include": (
        "databaseChangeLog:\n  - include:\n      file: other.yaml\n",
        2,
        "include is not supported by rollproof",
    ),
    "property": (
        "databaseChangeLog:\n  - property:\n      name: x\n      value: y\n",
        2,
        "property is not substituted by rollproof",
    ),
    "other changeset": (
        "databaseChangeLog:\n"
        "  - changeSet:\n"
        "      id: '1'\n"
        "      author: ann\n"
        "      changes:\n"
        "        - sql: {sql: 'CREATE TABLE t (a INTEGER);'}\n"
        "      rollback:\n"
        "        changeSetId: '0'\n"
        "        changeSetAuthor: ann\n",
        7,
        "changeSet ann:1: a rollback naming another changeSet is not supported",
    ),
    "not yaml": (
        "databaseChangeLog:\n  - changeSet: [\n",
        3,
        "not valid YAML: expected the node content, but found '<stream end>'",
    ),
    "python tag": (
        "databaseChangeLog: !!python/object/apply:os.system ['true']\n",
        1,
        "not valid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
}


@pytest.mark.parametrize("case", sorted(YAML_BAD))
def test_yaml_refusals_name_file_and_line(case: str, tmp_path: Path) -> None:
    text, line, message = YAML_BAD[case]
    (tmp_path / "changelog.yaml").write_text(text)
    with pytest.raises(FormatError) as e:
        load_project(tmp_path, "liquibase")
    assert str(e.value) == f"{tmp_path / 'changelog.yaml'}:{line}: {message}"


def test_json_refusals_name_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = (
        '{"databaseChangeLog": [\n'
        '  {"changeSet": {"id": "1", "author": "ann",\n'
        '    "changes": [{"sql": {"sql": "CREATE TABLE t (a INTEGER);"}}]}},\n'
        '  {"changeSet": {"id": "2", "author": "ann",\n'
        '    "changes": [\n'
        '      {"addColumn": {"tableName": "t"}}]}}\n'
        "]}\n"
    )
    (tmp_path / "changelog.json").write_text(doc)
    with pytest.raises(FormatError) as e:
        load_project(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'changelog.json'}:6: changeSet ann:2: addColumn is a Liquibase change "
        "type whose SQL Liquibase generates; rollproof rehearses only sql (or formatted SQL)"
    )
    source = _source(tmp_path / "db")
    assert main(["plan", str(tmp_path), "--source", str(source)]) == 2
    assert "addColumn is a Liquibase change type" in capsys.readouterr().err
    (tmp_path / "changelog.json").write_text('{"databaseChangeLog": [\n  {"changeSet": }\n]}\n')
    with pytest.raises(FormatError) as e:
        load_project(tmp_path)
    assert str(e.value) == f"{tmp_path / 'changelog.json'}:2: not valid JSON: Expecting value"
