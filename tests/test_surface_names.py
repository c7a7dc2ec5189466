"""Declared surfaces match an object's name exactly as the database does: ASCII case only.

SQLite compares names ignoring the case of ASCII letters and nothing else, so `Ä` and `ä` are
two tables (PostgreSQL folds only ASCII in an unquoted name too). Surfaces once matched names
with `str.lower`, which folds every script: a change declared to write `ä` wrote the table `Ä`
and passed, both the static scoping and the run-time authorizer calling it declared.

The oracle is SQLite: for a table created under one spelling, another spelling names the same
table exactly when SQLite resolves it to that table. For any two spellings drawn from letters
with and without case in many scripts, the guard allows a write under the second when the
first is declared exactly when SQLite says they are one table; the static scoping agrees.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollproof.core.errors import ScopeNotReadyError
from rollproof.core.guard import SurfaceGuard
from rollproof.core.model import LegName, Verdict
from rollproof.core.surface import AccessKind, fold_name
from rollproof.engines.sqlglot_scope import static_scope
from rollproof.engines.sqlite.source import fingerprint_file
from rollproof.surfaces.scope import changed_objects, observed_undeclared
from rollproof.surfaces.static import undeclared
from tests.conftest import MakeChange, rehearse_checked

# Letters with case in several scripts, ones whose lower case is special in Python (the Kelvin
# sign, dotted capital I, final sigma, sharp s, a title-case digraph), and ones without case.
LETTERS = "aAbBzZ" + "äÄéÉøØ" + "σΣς" + "жЖ" + "\u212a" + "İıi" + "ßẞ" + "ǅǆǄ" + "_1ぁ"  # noqa: RUF001 - the point
NAMES = st.text(alphabet=LETTERS, min_size=1, max_size=4)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_same_table(declared: str, other: str) -> bool:
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"CREATE TABLE {_quote(declared)} (x)")
        try:
            conn.execute(f"SELECT x FROM {_quote(other)}")
        except sqlite3.OperationalError:
            return False
        return True


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[str, str]:
    """A name and another: the same with some letters' case changed (Python's upper, lower or
    casefold of each, which may not be SQLite's), or drawn on its own."""
    declared = draw(NAMES)
    if draw(st.booleans()):
        return declared, draw(NAMES)
    change = st.sampled_from([str.upper, str.lower, str.casefold, str.swapcase, str])
    return declared, "".join(draw(change)(c) for c in declared)


@settings(max_examples=400, deadline=None)
@given(pair=_pairs())
def test_a_declared_write_covers_exactly_the_names_sqlite_resolves_to_it(
    pair: tuple[str, str],
) -> None:
    declared, other = pair
    same = _sqlite_same_table(declared, other)
    guard = SurfaceGuard(reads=[], writes=[declared])
    assert (guard.check(AccessKind.WRITE, other) is None) is same, (declared, other)
    assert (fold_name(declared) == fold_name(other)) is same
    scopes = static_scope(f"UPDATE {_quote(other)} SET x = 1;")
    missing = undeclared(scopes, reads=[], writes=[declared])
    assert (not missing) is same, (declared, other, missing)


@pytest.mark.parametrize(
    ("declared", "written", "same"),
    [
        ("Orders", "orders", True),
        ("ORDERS", "Orders", True),
        ("ä", "Ä", False),
        ("σ", "Σ", False),  # noqa: RUF001 - Greek on purpose
        ("k", "\u212a", False),  # the Kelvin sign lower-cases to k in Python
        ("i̇", "İ", False),  # Python lower-cases İ to i + combining dot
    ],
)
def test_named_cases(declared: str, written: str, same: bool) -> None:
    assert _sqlite_same_table(declared, written) is same
    guard = SurfaceGuard(reads=[], writes=[declared])
    assert (guard.check(AccessKind.WRITE, written) is None) is same


SOURCE = (
    'CREATE TABLE "Ä" (id INTEGER PRIMARY KEY, v);'
    'CREATE TABLE "ä" (id INTEGER PRIMARY KEY, v);'
    'INSERT INTO "Ä" VALUES (1, 1); INSERT INTO "ä" VALUES (1, 1);'
)


def _source(tmp_path: Path) -> Path:
    path = tmp_path / "prod.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(SOURCE)
    return path


def test_a_write_to_the_other_case_of_a_declared_name_is_refused(
    tmp_path: Path, make_change: MakeChange
) -> None:
    source = _source(tmp_path)
    change = make_change(
        'UPDATE "Ä" SET v = 2 WHERE id = 1;',
        'UPDATE "Ä" SET v = 1 WHERE id = 1;',
        surfaces='writes = ["ä"]\n',
    )
    with pytest.raises(ScopeNotReadyError) as info:
        rehearse_checked(change, str(source))
    assert info.value.problems == [
        'apply statement 1 `UPDATE "Ä" SET v = 2 WHERE id = 1`: write of undeclared Ä '
        "(add it to surfaces.writes)",
        'revert statement 1 `UPDATE "Ä" SET v = 1 WHERE id = 1`: write of undeclared Ä '
        "(add it to surfaces.writes)",
    ]
    result = rehearse_checked(change, str(source), legs=[LegName.REVERT], allow_undeclared=True)
    [leg] = result.legs
    assert leg.verdict is Verdict.FAIL
    assert leg.reason == (
        'apply failed: statement 1 `UPDATE "Ä" SET v = 2 WHERE id = 1;` was denied: '
        "write of undeclared object Ä"
    )


def test_the_declared_name_itself_passes(tmp_path: Path, make_change: MakeChange) -> None:
    source = _source(tmp_path)
    change = make_change(
        'UPDATE "Ä" SET v = 2 WHERE id = 1;',
        'UPDATE "Ä" SET v = 1 WHERE id = 1;',
        surfaces='writes = ["Ä"]\n',
    )
    result = rehearse_checked(change, str(source), legs=[LegName.REVERT])
    assert result.overall is Verdict.PASS, [leg.reason for leg in result.legs]


def test_observed_scope_names_the_changed_table_in_its_own_case(tmp_path: Path) -> None:
    """The bytes-level check (tables whose digests changed) matches declarations the same way."""
    before = _source(tmp_path)
    after = tmp_path / "after.db"
    after.write_bytes(before.read_bytes())
    with contextlib.closing(sqlite3.connect(after)) as conn:
        conn.execute('UPDATE "Ä" SET v = 2')
        conn.commit()
    changed = changed_objects(fingerprint_file(before), fingerprint_file(after))
    assert changed == {"Ä"}
    assert observed_undeclared(changed, ["ä"]) == ["Ä"]
    assert observed_undeclared(changed, ["Ä"]) == []
