"""A virtual table's shadow tables are covered by the virtual table's declaration.

FTS3/4/5 and R*Tree keep their data in real tables they name after the virtual table
(`docs_data`, `docs_idx`, `docs_content`, `r_node`, ...) and read and write them on every access
to the virtual table. A change declared to write `docs` was refused ("read of undeclared object
docs_config") before it ran a statement: an everyday migration (adding rows to a search index)
could not be rehearsed without --allow-undeclared. Each row of the matrix below is a module;
the shadow tables are SQLite's own list (`PRAGMA table_list`), never a guess from a name, so a
real table that only looks like one (`docs_notes`) stays undeclared.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from rollproof.core.model import LegName, Verdict
from rollproof.engines.sqlite.implicit import implicit_objects
from tests.conftest import MakeChange, rehearse_checked

MODULES = {
    "fts5": ("USING fts5(body)", "INSERT INTO {t} (body) VALUES ('third')", "body"),
    "fts4": ("USING fts4(body)", "INSERT INTO {t} (body) VALUES ('third')", "body"),
    "fts3": ("USING fts3(body)", "INSERT INTO {t} (body) VALUES ('third')", "body"),
    "rtree": ("USING rtree(id, x0, x1)", "INSERT INTO {t} VALUES (9, 1.0, 2.0)", "x0"),
}


def _available(module: str) -> bool:
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        try:
            conn.execute(f"CREATE VIRTUAL TABLE t {MODULES[module][0]}")
        except sqlite3.OperationalError:
            return False
    return True


def _source(tmp_path: Path, module: str) -> Path:
    """Two virtual tables of `module` (`docs`, `docs_x`) and a real `docs_notes`; the test is
    skipped where this SQLite lacks the module."""
    if not _available(module):
        pytest.skip(f"this SQLite has no {module} module")
    using = MODULES[module][0]
    path = tmp_path / "prod.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"CREATE VIRTUAL TABLE docs {using}")
        conn.execute(f"CREATE VIRTUAL TABLE docs_x {using}")
        conn.execute("CREATE TABLE docs_notes (n)")
        conn.commit()
    return path


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_write_to_a_declared_virtual_table_reaches_its_shadow_tables(
    tmp_path: Path, make_change: MakeChange, module: str
) -> None:
    source = _source(tmp_path, module)
    insert = MODULES[module][1]
    change = make_change(insert.format(t="docs") + ";", "SELECT 1;", surfaces='writes = ["docs"]\n')
    result = rehearse_checked(change, str(source), legs=[LegName.TRANSACTION])
    assert [e for e in result.surfaces.events if e.decision == "denied"] == []
    [leg] = result.legs
    assert leg.verdict is Verdict.PASS, leg.reason
    covered = {i["object"] for i in result.surfaces.to_json()["implicit"]}
    with contextlib.closing(sqlite3.connect(source)) as conn:
        shadows = {
            str(name)
            for _s, name, kind, *_r in conn.execute("PRAGMA table_list")
            if kind == "shadow"
            and str(name).startswith("docs_")
            and not str(name).startswith("docs_x_")
        }
    assert shadows, "the module made no shadow tables"
    assert covered <= shadows
    assert covered, "no shadow table was covered"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_shadow_tables_belong_to_their_own_virtual_table_only(tmp_path: Path, module: str) -> None:
    source = _source(tmp_path, module)
    with contextlib.closing(sqlite3.connect(source)) as conn:
        items, _tables = implicit_objects(conn)
        listed = {str(r[1]): str(r[2]) for r in conn.execute("PRAGMA table_list")}
    owners = {(i.object, i.owner) for i in items}
    for name, kind in listed.items():
        if kind != "shadow":
            assert not any(o == name for o, _ in owners), name  # docs_notes is nobody's
            continue
        expected = "docs_x" if name.startswith("docs_x_") else "docs"
        assert {owner for o, owner in owners if o == name} == {expected}, name


@pytest.mark.parametrize("module", ["fts5", "rtree"])
def test_a_write_to_another_virtual_table_or_a_lookalike_stays_undeclared(
    tmp_path: Path, make_change: MakeChange, module: str
) -> None:
    source = _source(tmp_path, module)
    insert = MODULES[module][1]
    change = make_change(
        insert.format(t="docs_x") + ";\nINSERT INTO docs_notes VALUES (1);",
        "SELECT 1;",
        surfaces='writes = ["docs"]\n',
    )
    result = rehearse_checked(
        change, str(source), legs=[LegName.TRANSACTION], allow_undeclared=True
    )
    denied = sorted({e.object for e in result.surfaces.events if e.decision == "denied"})
    assert denied == ["docs_notes", "docs_x"]
