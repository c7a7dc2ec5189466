"""Fingerprints carried over by a server copy instead of read again (PostgreSQL).

A working clone is CREATE DATABASE ... TEMPLATE of the snapshot, which is closed to every
connection before its fingerprint is read; the restore leg's clone carries the snapshot's
fingerprint and the revert leg continues from a copy of the restore leg's applied clone. The
packet says which points were carried and from where (`carried`), and the validator refuses a
carried point whose origin does not give exactly its digest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rollproof.assurance.selftest import forge
from rollproof.cli import main
from rollproof.core.fingerprint import Difference
from rollproof.core.model import LegName, Point, Verdict
from rollproof.engines.postgres.session import PostgresSession
from rollproof.evidence.write import write_tree_atomically
from rollproof.rehearse.flow import rehearse
from rollproof.rehearse.packet import build_packet, write_report
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    with_db,
)

SOURCE = """
CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
CREATE TABLE other (id int PRIMARY KEY, note text);
INSERT INTO items SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO other SELECT g, 'o' || g FROM generate_series(1, 50) g;
"""
LEGS = [LegName.TRANSACTION, LegName.REVERT, LegName.RESTORE]


def _rehearsed(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange, **kw: Any
) -> tuple[Any, list[str]]:
    change = make_pg_change(
        "UPDATE items SET qty = qty + 1 WHERE id <= 10;",
        "UPDATE items SET qty = qty - 1 WHERE id <= 10;",
        surfaces='writes = ["items"]\n',
    )
    said: list[str] = []
    legs = kw.pop("legs", LEGS)
    result = rehearse(
        change, pg_source(SOURCE), scratch=pg_servers.scratch, legs=legs, progress=said.append, **kw
    )
    return result, said


def _leg(result: Any, name: str) -> Any:
    return next(x for x in result.legs if x.name == LegName(name))


def test_clones_carry_the_sealed_snapshots_fingerprint_and_the_packet_says_so(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result, said = _rehearsed(pg_servers, pg_source, make_pg_change)
    assert result.overall is Verdict.PASS
    restore, revert = _leg(result, "restore"), _leg(result, "revert")
    assert restore.carried == {Point.AFTER_RESTORE: "snapshot"}
    assert restore.fingerprints[Point.AFTER_RESTORE] == result.source_fingerprint
    assert revert.carried == {Point.AFTER_APPLY: "restore.after_apply"}
    assert revert.fingerprints[Point.AFTER_APPLY] == restore.fingerprints[Point.AFTER_APPLY]
    assert _leg(result, "transaction").carried == {}
    # `other` is never written: read for the source, the snapshot and the source at the end,
    # never for a clone (every clone is a server copy, every later point narrowed to `items`).
    assert sum("fingerprinted table other " in m for m in said) == 3
    assert sum(m.startswith("copying the snapshot") for m in said) == 1
    assert "the working clone is the snapshot's copy made in the background" in said
    evidence = next(c for c in result.isolation.checks if c.name == "clone-matches-source")
    assert "ALLOW_CONNECTIONS false" in evidence.evidence

    packet = write_report(result, tmp_path / "packet")
    report = json.loads((packet / "report.json").read_text())
    carried = {leg["name"]: leg.get("carried") for leg in report["legs"]}
    assert carried == {
        "transaction": None,
        "revert": {"after_apply": "restore.after_apply"},
        "restore": {"after_restore": "snapshot"},
    }
    assert (
        "(carried over from `snapshot`: a server copy, not read)"
        in (packet / "report.md").read_text()
    )
    capsys.readouterr()
    assert main(["validate", str(packet)]) == 0


def test_a_carried_point_is_what_a_read_gives(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    carried, _said = _rehearsed(pg_servers, pg_source, make_pg_change)
    read, said = _rehearsed(pg_servers, pg_source, make_pg_change, full_fingerprints=True)
    assert read.overall is Verdict.PASS
    assert all(not leg.carried for leg in read.legs)  # --full-fingerprints reads every point
    # source, snapshot, the working clone against it, six points after scripts (after_rollback,
    # each leg's after_apply, after_restore, after_revert), the source again
    assert sum("fingerprinted table other " in m for m in said) == 9
    # The same source and change: every point, carried or read, has the same fingerprint.
    for a, b in zip(carried.legs, read.legs, strict=True):
        assert {p: f.digest for p, f in a.fingerprints.items()} == {
            p: f.digest for p, f in b.fingerprints.items()
        }


def test_every_leg_together_carries_and_validates(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the reapply leg, which continues on the revert leg's clone and so records the same
    carried after_apply: its packet was refused (LEG_CARRIED_UNFOUNDED: "no rehearsal carries
    that point over") until the validator knew that carry."""
    result, _said = _rehearsed(pg_servers, pg_source, make_pg_change, legs=list(LegName))
    assert result.overall is Verdict.PASS, [(x.name, x.verdict, x.reason) for x in result.legs]
    reapply = _leg(result, "reapply")
    assert reapply.carried == {Point.AFTER_APPLY: "restore.after_apply"}
    assert (
        reapply.fingerprints[Point.AFTER_APPLY]
        == _leg(result, "restore").fingerprints[Point.AFTER_APPLY]
    )
    packet = write_report(result, tmp_path / "packet")
    capsys.readouterr()
    assert main(["validate", str(packet)]) == 0


FORGERIES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "after_revert carried from the snapshot",
        lambda r: _report_leg(r, "revert").update(carried={"after_revert": "snapshot"}),
        "revert: after_revert carried over from snapshot: only a restore is a copy of the snapshot",
    ),
    (
        "a carried restore whose digest is not the snapshot's",
        lambda r: _report_leg(r, "restore")["fingerprints"].update(
            after_restore=_report_leg(r, "restore")["fingerprints"]["after_apply"]
        ),
        "restore: after_restore carried over from snapshot: its digest is not the snapshot's",
    ),
    (
        "an apply carried from the leg itself",
        lambda r: _report_leg(r, "revert").update(carried={"after_apply": "revert.after_apply"}),
        "revert: after_apply carried over from revert.after_apply: the report has no other leg "
        "of that name",
    ),
    (
        "an apply carried from a point that was carried too",
        lambda r: _report_leg(r, "restore").update(
            carried={"after_restore": "snapshot", "after_apply": "revert.after_apply"}
        ),
        "revert: after_apply carried over from restore.after_apply: that leg did not read it "
        "either",
    ),
    (
        "a carried point the leg does not record",
        lambda r: _report_leg(r, "transaction").update(carried={"after_revert": "snapshot"}),
        "transaction: after_revert carried over from snapshot: the leg records no fingerprint "
        "there",
    ),
]


def _report_leg(report: dict[str, Any], name: str) -> dict[str, Any]:
    leg: dict[str, Any] = next(x for x in report["legs"] if x["name"] == name)
    return leg


def test_the_validator_refuses_a_carried_point_its_origin_does_not_give(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result, _said = _rehearsed(pg_servers, pg_source, make_pg_change)
    files = build_packet(result)
    sound = write_tree_atomically(tmp_path / "sound", forge(files))
    capsys.readouterr()
    assert main(["validate", str(sound)]) == 0  # the forger's renderers alone change nothing
    for i, (_what, edit, message) in enumerate(FORGERIES):
        packet = write_tree_atomically(tmp_path / f"forged-{i}", forge(files, edit))
        capsys.readouterr()
        assert main(["validate", str(packet)]) == 1
        out = capsys.readouterr()
        assert f"LEG_CARRIED_UNFOUNDED report.json: {message}" in out.out + out.err


def test_the_snapshot_is_closed_to_every_connection(
    pg_servers: Servers, pg_source: MakeSource
) -> None:
    session = PostgresSession(pg_source(SOURCE), scratch=pg_servers.scratch)
    try:
        with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
            psycopg.connect(with_db(pg_servers.scratch, session.snapshot_db)).close()
        session.fresh_clone()  # a server copy: it carries the fingerprint, nothing is read
        assert session.carried_fingerprint() == session.snapshot_fingerprint()
        with psycopg.connect(with_db(pg_servers.scratch, session.clone_db)) as conn:
            conn.execute("SELECT 1")  # the working clone itself takes connections
    finally:
        session.close(keep=False)


def test_an_explanation_opens_the_snapshot_and_ends_the_carrying(
    pg_servers: Servers, pg_source: MakeSource
) -> None:
    session = PostgresSession(pg_source(SOURCE), scratch=pg_servers.scratch)
    try:
        session.fresh_clone()
        assert session.carried_fingerprint() == session.snapshot_fingerprint()
        # Explaining a difference opens the snapshot to connections for the read: from then
        # on a copy of it is read, never assumed.
        session.explain([Difference("table:items", "changed", "table items: rows differ")])
        session.fresh_clone()
        assert session.carried_fingerprint() is None
        with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
            psycopg.connect(with_db(pg_servers.scratch, session.snapshot_db)).close()
    finally:
        session.close(keep=False)
