"""Text in a UTF-16 SQLite database is fingerprinted as stored, code unit for code unit.

SQLite hands UTF-16 text out converted to UTF-8, and that conversion is lossy for text that is
not well-formed UTF-16: a high surrogate takes the low ten bits of whatever unit follows as its
pair, so the stored 'D800 0041' and 'D800 0441' both read as U+10041. Programs writing UTF-16
(Java, JavaScript, Windows strings through sqlite3_bind_text16) store lone surrogates as they
come. Read that way, a revert that wrote 'D800 0441' back where 'D800 0041' was would PASS.

The property: two databases that differ in one TEXT value have different fingerprints exactly
when the stored code units differ, for any units (lone surrogates of either kind, pairs, units
sharing their low ten bits, ASCII, BOMs), little- and big-endian databases, the value in a
plain column, in a text primary key, or in a table without a key, read in this process or by
worker processes. Well-formed text keeps the digest it had, which is also the UTF-8 database's.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollproof.core.canonical import canonical_json, table_digest_reference
from rollproof.core.change import load_change
from rollproof.core.model import LegName, Verdict
from rollproof.engines.sqlite import fingerprint as sqlite_fingerprint
from rollproof.engines.sqlite.source import fingerprint_file
from tests.conftest import rehearse_checked

ENCODINGS = {"UTF-16le": "utf-16-le", "UTF-16be": "utf-16-be"}

# Units a lossy conversion confuses: surrogates of both kinds, and units whose low ten bits are
# equal ('A' 0x0041, Cyrillic 0x0441, 0xFC41 ...), around ordinary text.
UNITS = st.one_of(
    st.sampled_from([0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0x0041, 0x0441, 0xFC41, 0xFEFF, 0x0000]),
    st.integers(0xD800, 0xDFFF),
    st.integers(0, 0xFFFF),
)
TEXTS = st.lists(UNITS, max_size=6)

SHAPES = {
    "column": ("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "(1, {v}), (2, 'x')"),
    "text key": ("CREATE TABLE t (v TEXT PRIMARY KEY, n) WITHOUT ROWID", "({v}, 1), (x'78', 2)"),
    "no key": ("CREATE TABLE t (v TEXT, n)", "({v}, 1), ({v}, 1), ('x', 2)"),
}


def _units_bytes(units: list[int], codec: str) -> bytes:
    order = "little" if codec.endswith("le") else "big"
    return b"".join(u.to_bytes(2, order) for u in units)


def _database(path: Path, encoding: str, shape: str, units: list[int]) -> Path:
    create, rows = SHAPES[shape]
    value = f"CAST(x'{_units_bytes(units, ENCODINGS[encoding]).hex()}' AS TEXT)"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA encoding = '{encoding}'")
        conn.execute(create)
        conn.execute(f"INSERT INTO t VALUES {rows.format(v=value)}")
    return path


def _digest(path: Path) -> str:
    return fingerprint_file(path).tables["t"].digest


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Two texts: equal, or one unit moved to another with the same low ten bits (what a lossy
    read keeps of a unit after a high surrogate), or drawn independently."""
    a = draw(TEXTS)
    how = draw(st.sampled_from(["equal", "same low bits", "independent"]))
    if how == "equal":
        return a, list(a)
    if how == "independent" or not a:
        return a, draw(TEXTS)
    i = draw(st.integers(0, len(a) - 1))
    high = draw(st.sampled_from([0x0000, 0x0400, 0xD800, 0xDC00, 0xFC00]))
    b = list(a)
    b[i] = high | (a[i] & 0x3FF)
    if draw(st.booleans()):
        b.insert(i, 0xD800 | draw(st.integers(0, 0x3FF)))  # behind a high surrogate
        a = [*a[:i], b[i], *a[i:]]
    return a, b


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pair=_pairs(),
    encoding=st.sampled_from(sorted(ENCODINGS)),
    shape=st.sampled_from(sorted(SHAPES)),
    workers=st.booleans(),
)
def test_two_texts_digest_alike_exactly_when_their_stored_units_are_equal(
    monkeypatch: pytest.MonkeyPatch,
    pair: tuple[list[int], list[int]],
    encoding: str,
    shape: str,
    workers: bool,
) -> None:
    a, b = pair
    monkeypatch.setattr(sqlite_fingerprint, "PARALLEL_MIN_BYTES", 0 if workers else 1 << 62)
    with tempfile.TemporaryDirectory() as tmp:
        one = _database(Path(tmp) / "a.db", encoding, shape, a)
        two = _database(Path(tmp) / "b.db", encoding, shape, b)
        assert (_digest(one) == _digest(two)) == (a == b), (a, b)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0xD800, 0x0041], [0xD800, 0x0441]),  # the pair SQLite reads as U+10041 both times
        ([0xD800, 0x0041], [0xD800, 0xDC41]),  # lone surrogate + 'A' against the real U+10041
        ([0xDBFF, 0xFC41], [0xDBFF, 0x0041]),
        ([0xD800], [0xDC00]),
    ],
    ids=["D800-0041/D800-0441", "D800-0041/U+10041", "DBFF-FC41/DBFF-0041", "D800/DC00"],
)
def test_malformed_utf16_values_a_lossy_read_confuses_are_told_apart(
    tmp_path: Path, encoding: str, a: list[int], b: list[int]
) -> None:
    one = _database(tmp_path / "a.db", encoding, "column", a)
    two = _database(tmp_path / "b.db", encoding, "column", b)
    assert _digest(one) != _digest(two)


WELL_FORMED = ["", "plain", "café", "日本語", "\U0001f600 astral", "\ufeffbom first", "a\x00b"]


def _well_formed(path: Path, encoding: str, shape: str) -> Path:
    create, _rows = SHAPES[shape]
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA encoding = '{encoding}'")
        conn.execute(create)
        for i, text in enumerate(WELL_FORMED):
            row = (i, text) if shape == "column" else (text, i)
            conn.execute("INSERT INTO t VALUES (?, ?)", row)
    return path


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_well_formed_text_keeps_its_digest(tmp_path: Path, encoding: str, shape: str) -> None:
    """Reading the stored units changes no digest of well-formed text: the table digest is the
    reference's over the rows as SQLite converts them (what was read before)."""
    path = _well_formed(tmp_path / "t.db", encoding, shape)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_xinfo(t)")]
        key = {"column": "id", "text key": "v", "no key": "rowid"}[shape]
        rows = conn.execute(f"SELECT * FROM t ORDER BY {key}").fetchall()
    order = "row-digests" if shape == "no key" else "primary-key"
    header = canonical_json({"table": "t", "columns": cols, "order": order})
    assert _digest(path) == table_digest_reference(header, order, rows)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("shape", ["column", "no key"])
def test_well_formed_text_digests_as_in_a_utf8_database(
    tmp_path: Path, encoding: str, shape: str
) -> None:
    """Where row order does not depend on the text (a text key orders by the stored encoding's
    bytes, which differs between UTF-8, UTF-16le and UTF-16be), the digest does not either."""
    utf16 = _well_formed(tmp_path / "a.db", encoding, shape)
    utf8 = _well_formed(tmp_path / "b.db", "UTF-8", shape)
    assert _digest(utf16) == _digest(utf8)


# -- end to end: the rehearsal that used to PASS --------------------------------------------

CHANGE = """\
apply_sql = "UPDATE t SET v = 'changed' WHERE id = 2;"
revert_sql = "UPDATE t SET v = 'x' WHERE id = 2; UPDATE t SET v = CAST(x'{back}' AS TEXT) WHERE id = 1;"
[surfaces]
writes = ["t"]
"""


@pytest.mark.parametrize(
    ("back", "verdict"),
    [("00d84104", Verdict.FAIL), ("00d84100", Verdict.PASS)],
    ids=["revert-writes-D800-0441", "revert-writes-D800-0041"],
)
def test_a_revert_that_writes_back_another_malformed_text_fails(
    tmp_path: Path, back: str, verdict: Verdict
) -> None:
    source = _database(tmp_path / "prod.db", "UTF-16le", "column", [0xD800, 0x0041])
    change_dir = tmp_path / "change"
    change_dir.mkdir()
    (change_dir / "change.toml").write_text(CHANGE.format(back=back))
    result = rehearse_checked(
        load_change(change_dir), f"sqlite:///{source}", legs=[LegName.REVERT, LegName.RESTORE]
    )
    revert = next(leg for leg in result.legs if leg.name is LegName.REVERT)
    assert revert.verdict is verdict, revert.reason
    if verdict is Verdict.FAIL:
        assert revert.reason == (
            "after_revert == before does not hold: table t: 1 rows differ; v: 1 values differ"
        )
    restore = next(leg for leg in result.legs if leg.name is LegName.RESTORE)
    assert restore.verdict is Verdict.PASS, restore.reason


# -- schema text: the same conversion reads every object's SQL -----------------------------


def _schema_with_default(path: Path, encoding: str, units: list[int]) -> Path:
    """A table whose DEFAULT literal holds `units`, written into the stored SQL as code units
    (as a UTF-16 program's CREATE TABLE through sqlite3_prepare16 stores them)."""
    codec = ENCODINGS.get(encoding)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA encoding = '{encoding}'")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT DEFAULT 'zz')")
        conn.execute("CREATE VIEW w AS SELECT 'zz' AS c")
        if codec is None:
            return path
        conn.execute("PRAGMA writable_schema = ON")
        for name, sql in [
            ("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT DEFAULT '{}')"),
            ("w", "CREATE VIEW w AS SELECT '{}' AS c"),
        ]:
            pre, post = (part.encode(codec).hex() for part in sql.split("{}"))
            stored = f"CAST(x'{pre}{_units_bytes(units, codec).hex()}{post}' AS TEXT)"
            conn.execute(f"UPDATE sqlite_schema SET sql = {stored} WHERE name = ?", (name,))
    return path


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize(
    ("a", "b"),
    [([0xD800, 0x0041], [0xD800, 0x0441]), ([0xDBFF, 0xFC41], [0xDBFF, 0x0041])],
    ids=["D800-0041/D800-0441", "DBFF-FC41/DBFF-0041"],
)
def test_schema_sql_a_lossy_read_confuses_is_told_apart(
    tmp_path: Path, encoding: str, a: list[int], b: list[int]
) -> None:
    one = fingerprint_file(_schema_with_default(tmp_path / "a.db", encoding, a))
    two = fingerprint_file(_schema_with_default(tmp_path / "b.db", encoding, b))
    assert one.schema_objects["table:t"] != two.schema_objects["table:t"]
    assert one.schema_objects["view:w"] != two.schema_objects["view:w"]
    assert one.schema_structural != two.schema_structural


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_well_formed_schema_sql_digests_as_in_a_utf8_database(
    tmp_path: Path, encoding: str
) -> None:
    utf16 = fingerprint_file(_schema_with_default(tmp_path / "a.db", encoding, [0x7A, 0x7A]))
    utf8 = fingerprint_file(_schema_with_default(tmp_path / "b.db", "UTF-8", []))
    assert utf16.schema_objects == utf8.schema_objects
    assert utf16.schema_structural == utf8.schema_structural
