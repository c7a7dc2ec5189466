"""The SQLite revert leg continues from a byte copy of the restore leg's committed apply.

One apply (and its read) serves the restore and revert legs: before the clone is restored, the
applied clone is copied and the copy hashed against it (`SqliteSession.branch`); the revert leg
takes the copy (`take_branch`) instead of a fresh clone, a second apply and a second read. The
report says the revert leg's after_apply was carried over from the restore leg's.

The proof that carrying loses nothing: for every change in the matrix (reverts that PASS, lose
data, fail outright, add rows, on rollback-journal and WAL sources, with and without a reapply),
the same rehearsal with `--full-fingerprints`, which applies and reads every leg on its own,
gives the same verdicts and the same digest at every point.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.core.change import load_change
from rollproof.core.model import LegName, Point, Verdict
from rollproof.rehearse.flow import rehearse
from rollproof.rehearse.packet import write_report

SOURCE = [
    "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, note TEXT)",
    "CREATE TABLE other (id INTEGER PRIMARY KEY, v TEXT)",
    "CREATE TABLE log (at INTEGER, what TEXT)",  # no key: digested as a multiset
]
CHANGES = {
    "a sound update": (
        "UPDATE items SET qty = qty + 1 WHERE id <= 10;",
        "UPDATE items SET qty = qty - 1 WHERE id <= 10;",
        Verdict.PASS,
    ),
    "a revert that loses what it should restore": (
        "UPDATE items SET note = 'x' WHERE id <= 5;",
        "UPDATE items SET note = '' WHERE id <= 5;",
        Verdict.FAIL,
    ),
    "new rows and their removal": (
        "INSERT INTO items (qty) SELECT qty FROM items WHERE id <= 20;",
        "DELETE FROM items WHERE id > 200;",
        Verdict.PASS,
    ),
    "a revert that leaves a row behind": (
        "INSERT INTO log VALUES (1, 'a'), (1, 'a');",
        "DELETE FROM log WHERE rowid = (SELECT max(rowid) FROM log);",
        Verdict.FAIL,
    ),
    "a schema change and back": (
        "ALTER TABLE items ADD COLUMN extra INTEGER DEFAULT 7;",
        "ALTER TABLE items DROP COLUMN extra;",
        Verdict.PASS,
    ),
    "a revert that errors": (
        "UPDATE items SET qty = 0 WHERE id = 1;",
        "UPDATE items SET qty = NULL WHERE id = 1;",  # NOT NULL: the revert stops
        Verdict.FAIL,
    ),
}


def _source(path: Path, wal: bool) -> Path:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    for statement in SOURCE:
        conn.execute(statement)
    conn.executemany("INSERT INTO items (qty, note) VALUES (?, ?)", [(i, None) for i in range(200)])
    conn.executemany("INSERT INTO other (v) VALUES (?)", [(f"o{i}",) for i in range(50)])
    conn.executemany("INSERT INTO log VALUES (?, ?)", [(i % 3, "a") for i in range(30)])
    conn.commit()
    conn.close()
    return path


def _change(where: Path, apply: str, revert: str) -> Path:
    where.mkdir()
    (where / "apply.sql").write_text(apply + "\n")
    (where / "revert.sql").write_text(revert + "\n")
    (where / "change.toml").write_text(
        'id = "branch"\napply = "apply.sql"\nrevert = "revert.sql"\n\n'
        '[surfaces]\nreads = []\nwrites = ["items", "log"]\n'
    )
    return where


@pytest.mark.parametrize("wal", [False, True], ids=["rollback journal", "WAL"])
@pytest.mark.parametrize("reapply", [False, True], ids=["revert", "revert+reapply"])
@pytest.mark.parametrize("name", CHANGES)
def test_the_carried_apply_gives_what_reading_every_leg_gives(
    tmp_path: Path, name: str, reapply: bool, wal: bool
) -> None:
    apply, revert, expected = CHANGES[name]
    source = _source(tmp_path / "src.db", wal)
    before = source.read_bytes()
    change = load_change(_change(tmp_path / "change", apply, revert))
    legs = [LegName.TRANSACTION, LegName.RESTORE, LegName.REVERT]
    if reapply:
        legs.append(LegName.REAPPLY)
    said: list[str] = []
    carried = rehearse(change, f"sqlite:///{source}", legs=legs, progress=said.append)
    full = rehearse(change, f"sqlite:///{source}", legs=legs, full_fingerprints=True)
    assert source.read_bytes() == before

    assert carried.overall is expected, [(x.name, x.verdict, x.reason) for x in carried.legs]
    by_leg = {x.name: x for x in carried.legs}
    assert "copying the applied clone for the revert leg" in said
    assert by_leg[LegName.REVERT].carried == {Point.AFTER_APPLY: "restore.after_apply"}
    assert (
        by_leg[LegName.REVERT].fingerprints[Point.AFTER_APPLY]
        == by_leg[LegName.RESTORE].fingerprints[Point.AFTER_APPLY]
    )
    assert all(not x.carried for x in full.legs)
    assert [(x.name, x.verdict) for x in carried.legs] == [(x.name, x.verdict) for x in full.legs]
    for mine, read in zip(carried.legs, full.legs, strict=True):
        assert {p: f.digest for p, f in mine.fingerprints.items()} == {
            p: f.digest for p, f in read.fingerprints.items()
        }, mine.name
    # The packet says so, and the validator accepts the carried point from its byte copy.
    packet = write_report(carried, tmp_path / "packet")
    assert main(["validate", str(packet)]) == 0


def test_without_a_restore_leg_the_revert_leg_applies_and_reads_on_its_own(tmp_path: Path) -> None:
    apply, revert, _ = CHANGES["a sound update"]
    source = _source(tmp_path / "src.db", wal=False)
    change = load_change(_change(tmp_path / "change", apply, revert))
    said: list[str] = []
    result = rehearse(change, f"sqlite:///{source}", legs=[LegName.REVERT], progress=said.append)
    assert result.overall is Verdict.PASS
    [leg] = result.legs
    assert leg.carried == {}
    assert "copying the applied clone for the revert leg" not in said
