"""Fingerprint v3 on real SQLite files: what must not change the digest, what must change it.

Every database here is a real file under pytest's temporary directories, fingerprinted through
`fingerprint_file` (the read-only path the CLI uses). Hypothesis generates the contents of four
kinds of table: an INTEGER PRIMARY KEY table, a composite NOT NULL primary key, a WITHOUT ROWID
table and a table without a primary key (duplicates allowed, digested as the multiset of its
row digests), with
mixed-type values in untyped columns.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollproof.core.canonical import SqlValue, canonical_json, table_digest_reference
from rollproof.core.fingerprint import (
    Difference,
    Fingerprint,
    compare,
    fingerprint_from_json,
)
from rollproof.engines.sqlite import fingerprint as sqlite_fingerprint
from rollproof.engines.sqlite.source import fingerprint_file

Row = tuple[SqlValue, ...]

# -- building real databases ------------------------------------------------------------------


def run_sql(path: Path, *statements: str) -> None:
    """Run statements on `path` in autocommit mode (each statement may be a whole script)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for sql in statements:
            conn.executescript(sql)


def fp_of(path: Path) -> Fingerprint:
    return fingerprint_file(path)


def diff_components(before: Fingerprint, after: Fingerprint) -> list[tuple[str, str]]:
    cmp = compare(before, after, strict_sequences=True)
    return [(d.component, d.kind) for d in cmp.differences]


SCHEMA = """
CREATE TABLE t_int (id INTEGER PRIMARY KEY, v);
CREATE TABLE t_comp (a INTEGER NOT NULL, b TEXT NOT NULL, v, PRIMARY KEY (a, b));
CREATE TABLE t_wr (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE t_nopk (a, b);
CREATE INDEX t_nopk_a ON t_nopk (a);
CREATE VIEW v_int AS SELECT id, v FROM t_int;
"""
TABLES = ("t_int", "t_comp", "t_wr", "t_nopk")
INSERT = {
    "t_int": "INSERT INTO t_int (id, v) VALUES (?, ?)",
    "t_comp": "INSERT INTO t_comp (a, b, v) VALUES (?, ?, ?)",
    "t_wr": "INSERT INTO t_wr (k, v) VALUES (?, ?)",
    "t_nopk": "INSERT INTO t_nopk (a, b) VALUES (?, ?)",
}
# Values no generated row can hold (the strategies keep texts and blobs at most 6 long), used
# for rows that are inserted and then deleted so that VACUUM has something to reorganise.
JUNK_TEXT = "junk-row-that-is-deleted"
JUNK_BLOB = b"junk-blob-that-is-deleted"


@dataclass(frozen=True)
class Dataset:
    rows: dict[str, list[Row]]

    def build(
        self,
        path: Path,
        *,
        shuffle: random.Random | None = None,
        reverse: bool = False,
        page_size: int | None = None,
        junk: bool = False,
    ) -> Path:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            if page_size is not None:
                conn.execute(f"PRAGMA page_size = {page_size}")
            conn.executescript(SCHEMA)
            conn.execute("BEGIN")
            tables = list(TABLES)
            if shuffle is not None:
                shuffle.shuffle(tables)
            if reverse:
                tables.reverse()
            for table in tables:
                rows = list(self.rows[table])
                if shuffle is not None:
                    shuffle.shuffle(rows)
                if reverse:
                    rows.reverse()
                for i, row in enumerate(rows):
                    if junk:
                        conn.execute(INSERT[table], self._junk(table, i))
                    conn.execute(INSERT[table], row)
            if junk:
                conn.execute("DELETE FROM t_int WHERE v = ?", (JUNK_BLOB,))
                conn.execute("DELETE FROM t_comp WHERE b = ?", (JUNK_TEXT,))
                conn.execute("DELETE FROM t_wr WHERE v = ?", (JUNK_BLOB,))
                conn.execute("DELETE FROM t_nopk WHERE b = ?", (JUNK_BLOB,))
            conn.execute("COMMIT")
        return path

    def _junk(self, table: str, i: int) -> Row:
        if table == "t_int":
            used = {r[0] for r in self.rows["t_int"]}
            free = [n for n in range(-100, 100) if n not in used]
            return (free[i], JUNK_BLOB)
        if table == "t_comp":
            return (i, JUNK_TEXT, None)
        if table == "t_wr":
            return (f"{JUNK_TEXT}-{i}", JUNK_BLOB)
        return (i, JUNK_BLOB)


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# NaN is stored by SQLite as NULL, so it is left out: it would only repeat the None case.
REALS = st.floats(allow_nan=False, allow_infinity=True, allow_subnormal=True)
TEXTS = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)  # bindable: no surrogates
BLOBS = st.binary(max_size=6)
LOOKALIKES = st.sampled_from([None, 0, 1, 1.0, 0.0, -0.0, "1", b"1", "a", "A", "", b""])
VALUES = st.one_of(st.none(), INT64, REALS, TEXTS, BLOBS, LOOKALIKES)


NOPK_VALUES = st.one_of(VALUES, LOOKALIKES)  # -0.0 included: it must differ from 0.0


def _with_duplicates(rows: list[Row]) -> list[Row]:
    return rows + rows[: len(rows) // 2]


# Rows of the table without a primary key are drawn from a small per-example pool built from
# groups of values that SQLite compares as equal or that look alike, so that rows SQL calls
# equal but that encode differently (1 and 1.0 differ only by storage class) and exact
# duplicate rows are common rather than rare.
TIE_GROUPS = [
    (0, 0.0, -0.0),
    (1, 1.0, "1", b"1"),
    (2**53, float(2**53), 2**53 + 1),
    ("a", "A", "a ", b"a"),
    (None, "", b""),
]
NOPK_POOL = st.tuples(
    st.lists(st.sampled_from(TIE_GROUPS), min_size=1, max_size=2),
    st.lists(NOPK_VALUES, max_size=2),
).map(lambda p: [v for group in p[0] for v in group] + p[1])
NOPK_ROWS = NOPK_POOL.flatmap(
    lambda pool: st.lists(st.tuples(st.sampled_from(pool), st.sampled_from(pool)), max_size=8)
).map(_with_duplicates)

DATASETS = st.builds(
    lambda t_int, t_comp, t_wr, t_nopk: Dataset(
        {
            "t_int": [(k, v) for k, v in t_int.items()],
            "t_comp": [(a, b, v) for (a, b), v in t_comp.items()],
            "t_wr": [(k, v) for k, v in t_wr.items()],
            "t_nopk": t_nopk,
        }
    ),
    st.dictionaries(st.one_of(INT64, st.integers(-5, 5)), VALUES, max_size=6),
    st.dictionaries(
        st.tuples(st.one_of(INT64, st.integers(-2, 2)), st.one_of(TEXTS, st.sampled_from("ab"))),
        VALUES,
        max_size=6,
    ),
    st.dictionaries(st.one_of(TEXTS, st.sampled_from(["a", "b", "é"])), VALUES, max_size=6),
    NOPK_ROWS,
)

PROPERTY = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def fresh_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """A new empty directory per call (hypothesis examples cannot use function fixtures)."""
    return lambda: tmp_path_factory.mktemp("db")


def stored_counts(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


# -- invariance properties --------------------------------------------------------------------


@PROPERTY
@given(DATASETS, st.randoms(use_true_random=False))
def test_insertion_order_does_not_count(
    fresh_dir: Callable[[], Path], data: Dataset, rnd: random.Random
) -> None:
    d = fresh_dir()
    a = fp_of(data.build(d / "a.db"))
    # reversed always moves rows (hypothesis shrinks shuffles towards the identity)
    b = fp_of(data.build(d / "b.db", reverse=True))
    c = fp_of(data.build(d / "c.db", shuffle=rnd))
    assert b.digest == a.digest
    assert c.digest == a.digest
    assert b.to_json() == a.to_json()
    assert c.to_json() == a.to_json()
    assert {t: a.tables[t].rows for t in TABLES} == {t: len(data.rows[t]) for t in TABLES}


@settings(max_examples=10, deadline=None)
@given(DATASETS)
def test_worker_processes_and_one_process_agree(
    fresh_dir: Callable[[], Path], data: Dataset
) -> None:
    db = data.build(fresh_dir() / "a.db")
    original = sqlite_fingerprint.PARALLEL_MIN_BYTES
    try:
        sqlite_fingerprint.PARALLEL_MIN_BYTES = 0  # every table on a worker process
        parallel = fp_of(db)
        sqlite_fingerprint.PARALLEL_MIN_BYTES = 1 << 62  # all in this process
        single = fp_of(db)
    finally:
        sqlite_fingerprint.PARALLEL_MIN_BYTES = original
    assert parallel.to_json() == single.to_json()


@PROPERTY
@given(DATASETS)
def test_vacuum_does_not_count(fresh_dir: Callable[[], Path], data: Dataset) -> None:
    d = fresh_dir()
    clean = fp_of(data.build(d / "clean.db"))
    holey = data.build(d / "holey.db", junk=True)
    assert stored_counts(holey) == {t: len(data.rows[t]) for t in TABLES}
    before_vacuum = fp_of(holey)
    run_sql(holey, "VACUUM")
    after_vacuum = fp_of(holey)
    assert before_vacuum.digest == clean.digest
    assert after_vacuum.digest == clean.digest
    assert after_vacuum.to_json() == clean.to_json()


@PROPERTY
@given(DATASETS, st.sampled_from([512, 1024, 8192, 65536]))
def test_page_size_does_not_count(
    fresh_dir: Callable[[], Path], data: Dataset, page_size: int
) -> None:
    d = fresh_dir()
    default = fp_of(data.build(d / "default.db"))
    other = data.build(d / "other.db", page_size=page_size, junk=True)
    run_sql(other, "VACUUM")
    with contextlib.closing(sqlite3.connect(other)) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == page_size
    assert fp_of(other).digest == default.digest


@PROPERTY
@given(DATASETS)
def test_analyze_statistics_are_excluded(fresh_dir: Callable[[], Path], data: Dataset) -> None:
    d = fresh_dir()
    path = data.build(d / "a.db")
    before = fp_of(path)
    run_sql(path, "ANALYZE")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        stat_tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE name LIKE 'sqlite_stat%' ORDER BY name"
            )
        ]
    assert "sqlite_stat1" in stat_tables
    after = fp_of(path)
    assert before.excluded == ()
    assert after.excluded == tuple(stat_tables)
    assert after.digest == before.digest
    assert after.schema_ddl_text == before.schema_ddl_text
    assert "sqlite_stat1" not in after.tables


REBUILD = {
    "t_int": "CREATE TABLE t_int__new (id INTEGER PRIMARY KEY, v)",
    "t_comp": (
        "CREATE TABLE t_comp__new (a INTEGER NOT NULL, b TEXT NOT NULL, v, PRIMARY KEY (a, b))"
    ),
    "t_wr": "CREATE TABLE t_wr__new (k TEXT PRIMARY KEY, v) WITHOUT ROWID",
    "t_nopk": "CREATE TABLE t_nopk__new (a, b)",
}


def rebuild(path: Path, tables: Sequence[str]) -> None:
    """SQLite's documented table rebuild, back to the same definition."""
    steps = ["DROP VIEW v_int;"]
    for t in tables:
        steps.append(
            f"{REBUILD[t]}; INSERT INTO {t}__new SELECT * FROM {t}; DROP TABLE {t}; "
            f"ALTER TABLE {t}__new RENAME TO {t};"
        )
    if "t_nopk" in tables:
        steps.append("CREATE INDEX t_nopk_a ON t_nopk (a);")
    steps.append("CREATE VIEW v_int AS SELECT id, v FROM t_int;")
    run_sql(path, "BEGIN; " + "\n".join(steps) + " COMMIT;")


@PROPERTY
@given(DATASETS, st.lists(st.sampled_from(TABLES), min_size=1, max_size=4, unique=True))
def test_table_rebuild_to_same_definition_does_not_count(
    fresh_dir: Callable[[], Path], data: Dataset, tables: list[str]
) -> None:
    d = fresh_dir()
    path = data.build(d / "a.db")
    before = fp_of(path)
    rebuild(path, tables)
    after = fp_of(path)
    assert after.digest == before.digest
    assert after.schema_objects == before.schema_objects
    # the stored DDL did change (ALTER TABLE ... RENAME rewrites it), and compare says so
    assert after.schema_ddl_text != before.schema_ddl_text
    cmp = compare(before, after, strict_sequences=True)
    assert cmp.equal
    assert cmp.ddl_text_only


# -- reformatted CREATE TABLE -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plain", "reformatted"),
    [
        pytest.param(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v)",
            'create   table "t"(\n  "id"   integer   primary key ,\n  [v]  -- payload\n)',
            id="integer-pk",
        ),
        pytest.param(
            "CREATE TABLE t (a INTEGER NOT NULL, b TEXT NOT NULL, v, PRIMARY KEY (a, b))",
            "CREATE TABLE `t` (a integer not null,b text NOT NULL,v,/* key */primary key(a,b))",
            id="composite-pk",
        ),
        pytest.param(
            "CREATE TABLE t (k TEXT PRIMARY KEY, v) WITHOUT ROWID",
            'CREATE TABLE "t" ("k" TEXT PRIMARY KEY,\n\t"v")\n  without   rowid',
            id="without-rowid",
        ),
        pytest.param(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT 'a' "
            "COLLATE NOCASE CHECK (length(name) < 10), qty INTEGER DEFAULT (1 + 2), "
            "CHECK (qty >= 0))",
            'CREATE TABLE t ( "id" INTEGER PRIMARY KEY , "name" text not null default \'a\' '
            'collate "nocase" check(length( name )<10) , qty integer default(1+2),'
            "check(qty>=0) )",
            id="check-default-collate",
        ),
    ],
)
def test_reformatted_create_table_does_not_count(
    tmp_path: Path, plain: str, reformatted: str
) -> None:
    a = tmp_path / "a.db"
    b = tmp_path / "b.db"
    run_sql(a, plain + ";")
    run_sql(b, reformatted + ";")
    fa, fb = fp_of(a), fp_of(b)
    assert fb.digest == fa.digest
    assert fb.schema_objects == fa.schema_objects
    assert fb.schema_ddl_text != fa.schema_ddl_text
    assert compare(fa, fb, strict_sequences=True).ddl_text_only


# -- what must change the digest --------------------------------------------------------------


@PROPERTY
@given(DATASETS, st.data())
def test_any_single_cell_change_counts(
    fresh_dir: Callable[[], Path], data: Dataset, draw: st.DataObject
) -> None:
    candidates = [t for t in TABLES if data.rows[t]]
    if not candidates:  # nothing to change: give t_nopk one row first
        data = Dataset({**data.rows, "t_nopk": [(None, None)]})
        candidates = ["t_nopk"]
    table = draw.draw(st.sampled_from(candidates))
    d = fresh_dir()
    path = data.build(d / "a.db")
    before = fp_of(path)
    i = draw.draw(st.integers(0, len(data.rows[table]) - 1))
    old_row = data.rows[table][i]
    column, old = {
        "t_int": ("v", old_row[-1]),
        "t_comp": ("v", old_row[-1]),
        "t_wr": ("v", old_row[-1]),
        "t_nopk": (draw.draw(st.sampled_from(["a", "b"])), None),
    }[table]
    if table == "t_nopk":
        old = old_row[0] if column == "a" else old_row[1]
    new = draw.draw(
        (NOPK_VALUES if table == "t_nopk" else VALUES).filter(
            lambda v: (type(v), repr(v)) != (type(old), repr(old))
        )
    )
    where = {
        "t_int": ("id = ?", (old_row[0],)),
        "t_comp": ("a = ? AND b = ?", (old_row[0], old_row[1])),
        "t_wr": ("k = ?", (old_row[0],)),
        "t_nopk": ("rowid = ?", (i + 1,)),  # inserted in order into a fresh table
    }[table]
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        cur = conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where[0]}", (new, *where[1]))
        assert cur.rowcount == 1
    after = fp_of(path)
    assert after.digest != before.digest
    assert diff_components(before, after) == [(f"table:{table}", "changed")]


ROW_ACTIONS = ["add", "remove", "duplicate"]


@PROPERTY
@given(DATASETS, st.sampled_from(TABLES), st.sampled_from(ROW_ACTIONS), st.data())
def test_adding_removing_or_duplicating_a_row_counts(
    fresh_dir: Callable[[], Path], data: Dataset, table: str, action: str, draw: st.DataObject
) -> None:
    rows = data.rows[table]
    if action != "add" and not rows:
        action = "add"
    if action == "duplicate" and table != "t_nopk":
        action = "remove"  # only a table without a primary key can hold a duplicate
    d = fresh_dir()
    path = data.build(d / "a.db")
    before = fp_of(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        if action == "add":
            new_row = {
                "t_int": (None, JUNK_TEXT),  # NULL id: the next rowid
                "t_comp": (3, JUNK_TEXT, None),
                "t_wr": (JUNK_TEXT, None),
                "t_nopk": (None, JUNK_BLOB),
            }[table]
            conn.execute(INSERT[table], new_row)
            expected_rows = len(rows) + 1
        else:
            i = draw.draw(st.integers(0, len(rows) - 1))
            if action == "duplicate":
                conn.execute(INSERT[table], rows[i])
                expected_rows = len(rows) + 1
            else:
                key = {"t_int": "id = ?", "t_comp": "a = ? AND b = ?", "t_wr": "k = ?"}
                if table == "t_nopk":
                    cur = conn.execute("DELETE FROM t_nopk WHERE rowid = ?", (i + 1,))
                else:
                    n = 2 if table == "t_comp" else 1
                    cur = conn.execute(f"DELETE FROM {table} WHERE {key[table]}", rows[i][:n])
                assert cur.rowcount == 1
                expected_rows = len(rows) - 1
    after = fp_of(path)
    assert after.digest != before.digest
    assert after.tables[table].rows == expected_rows
    assert diff_components(before, after) == [(f"table:{table}", "changed")]


BASE = """
CREATE TABLE t (id INTEGER PRIMARY KEY, v);
CREATE TABLE n (a, b);
INSERT INTO t VALUES (1, 1), (2, '1'), (3, 'x'), (4, 2.5);
INSERT INTO n VALUES ('a3', 'b'), (1, NULL), (1, NULL);
"""


@pytest.mark.parametrize(
    ("mutation", "table"),
    [
        pytest.param("UPDATE t SET v = 1.0 WHERE id = 1", "t", id="int-to-real"),
        pytest.param("UPDATE t SET v = '1' WHERE id = 1", "t", id="int-to-text"),
        pytest.param("UPDATE t SET v = x'31' WHERE id = 2", "t", id="text-to-blob"),
        pytest.param("UPDATE t SET v = NULL WHERE id = 3", "t", id="text-to-null"),
        pytest.param("UPDATE t SET v = 2 WHERE id = 4", "t", id="real-to-int-other-value"),
        pytest.param("UPDATE n SET a = 'a', b = '3b' WHERE a = 'a3'", "n", id="a3-b-to-a-3b"),
        pytest.param("UPDATE n SET a = 1.0 WHERE rowid = 2", "n", id="nopk-int-to-real"),
        pytest.param("INSERT INTO n VALUES (1, NULL)", "n", id="nopk-third-duplicate"),
        pytest.param("DELETE FROM n WHERE rowid = 3", "n", id="nopk-one-duplicate-less"),
    ],
)
def test_value_and_type_changes_count(tmp_path: Path, mutation: str, table: str) -> None:
    path = tmp_path / "a.db"
    run_sql(path, BASE)
    before = fp_of(path)
    run_sql(path, mutation)
    after = fp_of(path)
    assert after.digest != before.digest
    assert diff_components(before, after) == [(f"table:{table}", "changed")]


def test_a3_b_and_a_3b_tables_differ(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    run_sql(a, "CREATE TABLE n (x, y); INSERT INTO n VALUES ('a3', 'b');")
    run_sql(b, "CREATE TABLE n (x, y); INSERT INTO n VALUES ('a', '3b');")
    assert fp_of(a).tables["n"].digest != fp_of(b).tables["n"].digest
    assert fp_of(a).digest != fp_of(b).digest


SCHEMA_BASE = """
CREATE TABLE s (id INTEGER PRIMARY KEY, name TEXT DEFAULT 'a' CHECK (length(name) < 10));
CREATE TABLE log (msg TEXT);
CREATE VIEW s_names AS SELECT name FROM s;
CREATE TRIGGER s_log AFTER INSERT ON s BEGIN INSERT INTO log VALUES ('inserted'); END;
INSERT INTO s (id, name) VALUES (1, 'x'), (2, 'y');
"""


def _recreate_s(definition: str) -> str:
    return (
        "DROP VIEW s_names; DROP TRIGGER s_log; "
        f"CREATE TABLE s__new ({definition}); INSERT INTO s__new SELECT * FROM s; "
        "DROP TABLE s; ALTER TABLE s__new RENAME TO s; "
        "CREATE VIEW s_names AS SELECT name FROM s; "
        "CREATE TRIGGER s_log AFTER INSERT ON s BEGIN INSERT INTO log VALUES ('inserted'); END;"
    )


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        pytest.param(
            _recreate_s("id INTEGER PRIMARY KEY, name TEXT DEFAULT 'a' CHECK (length(name) < 10)"),
            [],
            id="control-same-definition",
        ),
        pytest.param(
            _recreate_s(
                "id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE DEFAULT 'a' "
                "CHECK (length(name) < 10)"
            ),
            [("schema:table:s", "changed")],
            id="collation",
        ),
        pytest.param(
            _recreate_s("id INTEGER PRIMARY KEY, name TEXT DEFAULT 'a' CHECK (length(name) < 11)"),
            [("schema:table:s", "changed")],
            id="check-constraint",
        ),
        pytest.param(
            _recreate_s("id INTEGER PRIMARY KEY, name TEXT DEFAULT 'A' CHECK (length(name) < 10)"),
            [("schema:table:s", "changed")],
            id="default-case",
        ),
        pytest.param(
            "CREATE INDEX s_name ON s (name)",
            [("schema:index:s_name", "added")],
            id="new-index",
        ),
        pytest.param(
            "DROP TRIGGER s_log; CREATE TRIGGER s_log AFTER INSERT ON s "
            "BEGIN INSERT INTO log VALUES ('INSERTED'); END;",
            [("schema:trigger:s_log", "changed")],
            id="trigger-body",
        ),
        pytest.param(
            "DROP VIEW s_names; CREATE VIEW s_names AS SELECT name FROM s WHERE id > 1",
            [("schema:view:s_names", "changed")],
            id="view",
        ),
    ],
)
def test_schema_changes_count(
    tmp_path: Path, mutation: str, expected: list[tuple[str, str]]
) -> None:
    path = tmp_path / "a.db"
    run_sql(path, SCHEMA_BASE)
    before = fp_of(path)
    run_sql(path, mutation)
    after = fp_of(path)
    assert diff_components(before, after) == expected
    assert (after.digest != before.digest) == bool(expected)
    # content is untouched by every schema mutation here
    assert after.tables == before.tables


# -- sequences ----------------------------------------------------------------------------------

SEQ_BASE = """
CREATE TABLE s (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
INSERT INTO s (v) VALUES ('a'), ('b');
"""


def test_autoincrement_insert_advances_sequence(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    run_sql(path, SEQ_BASE)
    before = fp_of(path)
    assert dict(before.sequences) == {"s": 2}
    assert "sqlite_sequence" not in before.tables
    run_sql(path, "INSERT INTO s (v) VALUES ('c')")
    after = fp_of(path)
    assert dict(after.sequences) == {"s": 3}
    assert after.digest != before.digest


def _advanced_only(tmp_path: Path) -> tuple[Fingerprint, Fingerprint]:
    path = tmp_path / "a.db"
    run_sql(path, SEQ_BASE)
    before = fp_of(path)
    run_sql(path, "INSERT INTO s (v) VALUES ('c'); DELETE FROM s WHERE v = 'c';")
    after = fp_of(path)
    assert after.tables == before.tables  # content came back; only the counter moved
    assert dict(after.sequences) == {"s": 3}
    return before, after


def test_sequence_advance_is_tolerated_unless_strict(tmp_path: Path) -> None:
    before, after = _advanced_only(tmp_path)
    advanced = Difference(
        "sequence:s", "advanced", "sequence s advanced from 2 to 3", {"before": 2, "after": 3}
    )
    lenient = compare(before, after, strict_sequences=False)
    assert lenient.differences == ()
    assert lenient.tolerated == (advanced,)
    assert lenient.equal
    strict = compare(before, after, strict_sequences=True)
    assert strict.differences == (advanced,)
    assert strict.tolerated == ()
    assert not strict.equal
    # the whole digest covers sequence values either way
    assert after.digest != before.digest


@pytest.mark.parametrize(
    "strict", [pytest.param(False, id="lenient"), pytest.param(True, id="strict")]
)
def test_sequence_decrease_is_always_a_difference(tmp_path: Path, strict: bool) -> None:
    path = tmp_path / "a.db"
    run_sql(path, SEQ_BASE)
    before = fp_of(path)
    run_sql(path, "UPDATE sqlite_sequence SET seq = 1 WHERE name = 's'")
    after = fp_of(path)
    assert dict(after.sequences) == {"s": 1}
    cmp = compare(before, after, strict_sequences=strict)
    assert [(d.component, d.kind, dict(d.detail)) for d in cmp.differences] == [
        ("sequence:s", "decreased", {"before": 2, "after": 1})
    ]
    assert cmp.tolerated == ()


# -- invalid UTF-8 ------------------------------------------------------------------------------


def expected_table_digest(name: str, cols: list[str], order: str, rows: list[Row]) -> str:
    """The documented table digest, recomputed with the reference encoder."""
    header = canonical_json({"table": name, "columns": cols, "order": order})
    return table_digest_reference(header, order, rows)


def test_invalid_utf8_text_fingerprints_and_differs_from_valid_text(tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.db", tmp_path / "good.db"
    run_sql(bad, "CREATE TABLE t (v TEXT); INSERT INTO t VALUES (CAST(x'ff' AS TEXT));")
    run_sql(good, "CREATE TABLE t (v TEXT); INSERT INTO t VALUES (CAST(x'c3bf' AS TEXT));")
    with contextlib.closing(sqlite3.connect(bad)) as conn:
        assert conn.execute("SELECT typeof(v), hex(v) FROM t").fetchall() == [("text", "FF")]
    fb, fg = fp_of(bad), fp_of(good)
    assert fb.tables["t"].rows == 1
    assert fb.tables["t"].digest == expected_table_digest("t", ["v"], "row-digests", [("\udcff",)])
    assert fg.tables["t"].digest == expected_table_digest("t", ["v"], "row-digests", [("\xff",)])
    assert fb.digest != fg.digest
    assert fp_of(bad) == fb  # and deterministically so


@pytest.fixture(params=["one-process", "worker-processes"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a file's tables are read: here with `sqlite3`, or by workers through APSW."""
    if request.param == "worker-processes":
        monkeypatch.setattr(sqlite_fingerprint, "PARALLEL_MIN_BYTES", 0)
    return str(request.param)


def test_invalid_utf8_in_one_table_leaves_others_alone(tmp_path: Path, reader: str) -> None:
    mixed, clean = tmp_path / "mixed.db", tmp_path / "clean.db"
    ok = "CREATE TABLE ok (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO ok VALUES (1, 'é');"
    run_sql(clean, ok)
    run_sql(
        mixed,
        ok,
        "CREATE TABLE bad (id INTEGER PRIMARY KEY, v TEXT);"
        "INSERT INTO bad VALUES (1, CAST(x'61ff62' AS TEXT)), (2, 'fine');",
    )
    fm = fp_of(mixed)
    assert fm.tables["ok"] == fp_of(clean).tables["ok"]
    assert fm.tables["bad"].digest == expected_table_digest(
        "bad", ["id", "v"], "primary-key", [(1, "a\udcffb"), (2, "fine")]
    )


LIVE = (
    "CREATE TABLE a (id INTEGER PRIMARY KEY, v); CREATE TABLE b (id INTEGER PRIMARY KEY, v);"
    "INSERT INTO a VALUES (1, 'x'); INSERT INTO b VALUES (1, 'y');"
)


def _write_b(db: Path, outcomes: list[str]) -> None:
    """A writer on another connection commits one row into b, or says why it cannot."""
    with contextlib.closing(sqlite3.connect(db, timeout=0, isolation_level=None)) as w:
        try:
            w.execute("INSERT INTO b VALUES (?, 'late')", (len(outcomes) + 2,))
            outcomes.append("committed")
        except sqlite3.OperationalError as e:
            outcomes.append(str(e))


def test_a_live_database_is_fingerprinted_at_one_instant(tmp_path: Path, reader: str) -> None:
    db = tmp_path / "live.db"
    run_sql(db, LIVE)
    before = fp_of(db)
    outcomes: list[str] = []
    fp = fingerprint_file(db, lambda _msg: _write_b(db, outcomes))
    # The fingerprint's read lock keeps writers from committing until it is taken...
    assert outcomes
    assert set(outcomes) == {"database is locked"}
    assert fp == before
    # ...and no longer.
    _write_b(db, outcomes)
    assert outcomes[-1] == "committed"
    assert fp_of(db) != before


def test_a_live_wal_database_is_fingerprinted_at_one_instant(tmp_path: Path, reader: str) -> None:
    db = tmp_path / "live.db"
    run_sql(db, "PRAGMA journal_mode = WAL;", LIVE)
    before = fp_of(db)
    outcomes: list[str] = []
    # In WAL mode a writer commits while the fingerprint runs (before table b is read): the
    # fingerprint is still that of the instant it began.
    fp = fingerprint_file(db, lambda _msg: _write_b(db, outcomes))
    assert "committed" in outcomes
    assert fp == before
    assert fp_of(db) != before


def test_table_digest_follows_the_documented_algorithm(tmp_path: Path, reader: str) -> None:
    path = tmp_path / "a.db"
    run_sql(
        path,
        "CREATE TABLE n (a, b); CREATE TABLE k (id INTEGER PRIMARY KEY, v);"
        "INSERT INTO n VALUES ('b', 1), (1.0, x'00'), (1, NULL), (NULL, 'z'), ('a', 2);"
        "INSERT INTO k VALUES (3, 'c'), (-1, 'a'), (2, 2.5);",
    )
    fp = fp_of(path)
    # row-digests: the multiset of rows, so any order of them gives the digest
    n_rows: list[Row] = [("a", 2), (1.0, b"\x00"), (None, "z"), (1, None), ("b", 1)]
    n_digest = expected_table_digest("n", ["a", "b"], "row-digests", n_rows)
    assert n_digest == expected_table_digest("n", ["a", "b"], "row-digests", n_rows[::-1])
    assert fp.tables["n"].digest == n_digest
    # and 1.0 is not 1: the same rows with one storage class changed digest differently
    other = [(1, b"\x00") if r == (1.0, b"\x00") else r for r in n_rows]
    assert expected_table_digest("n", ["a", "b"], "row-digests", other) != n_digest
    k_rows: list[Row] = [(-1, "a"), (2, 2.5), (3, "c")]
    assert fp.tables["k"].digest == expected_table_digest("k", ["id", "v"], "primary-key", k_rows)
    whole = json.dumps(
        {
            "algorithm": "rollproof-fingerprint",
            "version": 4,
            "schema": fp.schema_structural,
            "tables": {
                name: {"digest": t.digest, "rows": t.rows, "order": t.order}
                for name, t in fp.tables.items()
            },
            "sequences": {},
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert fp.digest == "sha256:" + hashlib.sha256(whole).hexdigest()


# -- bounded memory -----------------------------------------------------------------------------

BIG_ROWS = 200_000


def _big_rows() -> Iterator[tuple[int, str]]:
    for i in range(BIG_ROWS):
        yield (i, f"{i:08d}-" + "x" * 90)


@pytest.mark.parametrize(
    ("ddl", "order"),
    [
        pytest.param("CREATE TABLE big (id INTEGER PRIMARY KEY, payload TEXT)", "primary-key"),
        pytest.param("CREATE TABLE big (id INTEGER, payload TEXT)", "row-digests"),
    ],
    ids=["primary-key", "row-digests"],
)
def test_fingerprint_streams_in_bounded_memory(tmp_path: Path, ddl: str, order: str) -> None:
    """Peak *traced* Python memory stays far below the size of the table.

    This is deliberately not a timing test: wall-clock limits are flaky across machines and
    under load, while the peak of tracemalloc's traced allocations is deterministic for a given
    Python. 200,000 rows of ~100-character text held at once would need well over 40 MB of
    Python objects; one chunk of ROW_CHUNK rows is tens of kilobytes. SQLite's own allocations
    (its page cache, and the sort of a table without a primary key, which spills to temporary
    files) are not Python allocations and are not traced, so this bounds what rollproof keeps.
    """
    path = tmp_path / "big.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(ddl)
        conn.execute("BEGIN")
        # inserted in reverse, so that neither table is read in insertion order
        conn.executemany("INSERT INTO big VALUES (?, ?)", reversed(list(_big_rows())))
        conn.execute("COMMIT")
    warm = tmp_path / "warm.db"
    run_sql(warm, ddl + "; INSERT INTO big VALUES (1, 'x');")
    fp_of(warm)  # first-use costs (tokenizer tables, lazy imports) are not the table's

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fp = fp_of(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"
    assert fp.tables["big"].rows == BIG_ROWS
    assert fp.tables["big"].order == order

    # ascending id is the key order (and any order will do for row digests)
    expected = expected_table_digest("big", ["id", "payload"], order, list(_big_rows()))
    assert fp.tables["big"].digest == expected


# -- JSON round trip ----------------------------------------------------------------------------


@pytest.fixture
def rich_fp(tmp_path: Path) -> Fingerprint:
    path = tmp_path / "rich.db"
    run_sql(
        path,
        SCHEMA,
        SEQ_BASE,
        "INSERT INTO t_int VALUES (1, 'a'), (2, x'00');"
        "INSERT INTO t_nopk VALUES (1, 1), (1, 1);"
        "ANALYZE;",
    )
    fp = fp_of(path)
    assert fp.excluded == ("sqlite_stat1",)
    assert dict(fp.sequences) == {"s": 2}
    return fp


def test_json_round_trip(rich_fp: Fingerprint) -> None:
    data = rich_fp.to_json()
    assert fingerprint_from_json(data) == rich_fp
    through_text = json.loads(json.dumps(data))
    again = fingerprint_from_json(through_text)
    assert again == rich_fp
    assert again.digest == rich_fp.digest
    assert again.to_json() == data


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


FAKE = "sha256:" + "0" * 64
FAKE_CONTENT = "blake3:" + "0" * 64


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_set(("tables", "t_int", "digest"), FAKE_CONTENT), id="table-digest"),
        pytest.param(_set(("sequences", "s"), 3), id="sequence-value"),
        pytest.param(_set(("schema", "structural"), FAKE), id="schema-structural"),
        pytest.param(_set(("digest",), FAKE), id="whole-digest"),
        pytest.param(
            lambda d: d["tables"].pop("t_wr"),
            id="table-removed",
        ),
        pytest.param(
            lambda d: d["sequences"].update({"ghost": 1}),
            id="sequence-added",
        ),
        pytest.param(
            _set(("schema", "objects", "table:t_int"), FAKE),
            id="schema-object-digest",
        ),
    ],
)
def test_tampered_json_is_rejected(
    rich_fp: Fingerprint, tamper: Callable[[dict[str, Any]], None]
) -> None:
    data = json.loads(json.dumps(rich_fp.to_json()))
    fingerprint_from_json(data)  # untouched: accepted
    tamper(data)
    with pytest.raises(ValueError, match="does not match"):
        fingerprint_from_json(data)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(_set(("version",), 1), id="version-1-sha256-tables"),
        pytest.param(_set(("version",), 2), id="version-2-sorted-rows"),
        pytest.param(_set(("version",), 3), id="version-3-lowercased-names"),
        pytest.param(_set(("version",), 5), id="version-unknown"),
        pytest.param(_set(("algorithm",), "other"), id="algorithm"),
    ],
)
def test_unknown_algorithm_or_version_is_rejected(
    rich_fp: Fingerprint, edit: Callable[[dict[str, Any]], None]
) -> None:
    data = rich_fp.to_json()
    edit(data)
    with pytest.raises(ValueError, match="unsupported fingerprint algorithm"):
        fingerprint_from_json(data)


def test_a_table_digest_in_another_form_is_rejected(rich_fp: Fingerprint) -> None:
    data = rich_fp.to_json()
    fingerprint_from_json(data)  # as written: accepted
    data["tables"]["t_int"]["digest"] = "sha256:" + data["tables"]["t_int"]["digest"][7:]
    with pytest.raises(ValueError, match="table t_int: digest is not of the form blake3:<64 hex>"):
        fingerprint_from_json(data)


@pytest.mark.parametrize("order", ["sorted-rows", "", None, "primary-key "])
def test_a_table_order_outside_version_3_is_rejected(rich_fp: Fingerprint, order: Any) -> None:
    data = rich_fp.to_json()
    assert fingerprint_from_json(data) == rich_fp  # as written: accepted
    data["tables"]["t_int"]["order"] = order
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"table t_int: order {order!r} is not one of ('primary-key', 'row-digests')"
        ),
    ):
        fingerprint_from_json(data)


# -- regressions: bugs these tests found, fixed in src ------------------------------------------


def test_negative_zero_rows_do_not_depend_on_insertion_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    for path, values in ((a, (-0.0, 0.0)), (b, (0.0, -0.0))):
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("CREATE TABLE n (x)")
            for v in values:
                conn.execute("INSERT INTO n VALUES (?)", (v,))
    assert fp_of(a).digest == fp_of(b).digest


def test_integer_primary_key_desc_with_nulls_does_not_depend_on_insertion_order(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY DESC, v);"
    run_sql(a, ddl + "INSERT INTO t VALUES (NULL, 'a'); INSERT INTO t VALUES (NULL, 'b');")
    run_sql(b, ddl + "INSERT INTO t VALUES (NULL, 'b'); INSERT INTO t VALUES (NULL, 'a');")
    with contextlib.closing(sqlite3.connect(a)) as conn:
        assert conn.execute("SELECT count(*) FROM t WHERE id IS NULL").fetchone()[0] == 2
    assert fp_of(a).digest == fp_of(b).digest


def test_whitespace_inside_a_declared_type_does_not_count(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    run_sql(a, "CREATE TABLE t (price DECIMAL(10,2), code VARCHAR(8));")
    run_sql(b, "CREATE TABLE t (price DECIMAL(10, 2), code VARCHAR( 8 ));")
    assert fp_of(a).digest == fp_of(b).digest
