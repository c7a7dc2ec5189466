"""A sealed snapshot kept on the scratch server and reused by the next rehearsal of the source.

Reuse needs the source's fingerprint (read every time) to equal the one the cache was sealed
with, and the copy's own fingerprint (read every time) to equal the source's: a changed source
or a tampered cache falls back to pg_dump + pg_restore and still gives the right verdict.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rollproof.cli import main
from rollproof.core.model import LegName, Verdict
from rollproof.engines.postgres import snapcache
from rollproof.rehearse.flow import rehearse
from rollproof.rehearse.packet import write_report
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    admin,
    database_names,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    with_db,
)

SOURCE = """
CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
INSERT INTO items SELECT g, g FROM generate_series(1, 50) g;
"""
LEGS = [LegName.TRANSACTION, LegName.REVERT, LegName.RESTORE]


@pytest.fixture(name="cached")
def cached_fixture(
    pg_servers: Servers, pg_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Reuse asked for; every cache dropped before the scratch server is checked empty."""
    del pg_source  # torn down after this fixture, which must empty the scratch server first
    monkeypatch.setenv(snapcache.ENV, "1")
    try:
        yield
    finally:
        with admin(pg_servers.scratch) as conn:
            snapcache.drop_caches(conn)


def _run(pg_servers: Servers, source: str, change: Any) -> tuple[Any, str]:
    said: list[str] = []
    result = rehearse(change, source, scratch=pg_servers.scratch, legs=LEGS, progress=said.append)
    check = next(c for c in result.isolation.checks if c.name == "clone-matches-source")
    assert check.holds is True
    return result, check.evidence


def _change(make_pg_change: MakePgChange) -> Any:
    return make_pg_change(
        "UPDATE items SET qty = qty + 1 WHERE id <= 10;",
        "UPDATE items SET qty = qty - 1 WHERE id <= 10;",
        surfaces='writes = ["items"]\n',
    )


def _caches(pg_servers: Servers) -> set[str]:
    return {n for n in database_names(pg_servers.scratch) if n.startswith(snapcache.PREFIX)}


def test_second_rehearsal_reuses_the_sealed_snapshot_and_the_packet_validates(
    cached: None,
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, change = pg_source(SOURCE), _change(make_pg_change)
    first, said = _run(pg_servers, source, change)
    assert "not dumped again" not in said
    assert len(_caches(pg_servers)) == 1
    second, said = _run(pg_servers, source, change)
    assert second.overall is Verdict.PASS
    assert "not dumped again: the snapshot is a server copy of rollproof_cache_" in said
    assert said.startswith("the source was read in snapshot ")
    assert second.source_fingerprint == first.source_fingerprint
    out = tmp_path / "packet"
    write_report(second, out)
    assert main(["validate", str(out)]) == 0, capsys.readouterr().err


def test_a_changed_source_is_dumped_again(
    cached: None, pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    source, change = pg_source(SOURCE), _change(make_pg_change)
    _run(pg_servers, source, change)
    with admin(source) as conn:
        conn.execute("UPDATE items SET qty = 0 WHERE id = 50")
    result, said = _run(pg_servers, source, change)
    assert result.overall is Verdict.PASS
    assert "was sealed for another source fingerprint: dumped and restored instead" in said
    # The cache now holds the changed source: a third rehearsal reuses it.
    _, said = _run(pg_servers, source, change)
    assert "not dumped again" in said
    with admin(source) as conn:
        conn.execute("UPDATE items SET qty = 50 WHERE id = 50")


def test_a_tampered_cache_is_not_reused_and_the_verdict_stays_right(
    cached: None, pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    source, change = pg_source(SOURCE), _change(make_pg_change)
    _run(pg_servers, source, change)
    (cache,) = _caches(pg_servers)
    with admin(pg_servers.scratch) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(cache))
        )
    with contextlib.closing(
        psycopg.connect(with_db(pg_servers.scratch, cache), autocommit=True)
    ) as conn:
        conn.execute("UPDATE items SET qty = -1 WHERE id = 3")
    with admin(pg_servers.scratch) as conn:
        # Closed again, as rollproof leaves it: only the copy's read tells.
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(cache))
        )
    result, said = _run(pg_servers, source, change)
    assert result.overall is Verdict.PASS
    assert f"the cached snapshot {cache} was copied but its fingerprint" in said
    assert "dropped, dumped and restored instead" in said
    assert "not dumped again" not in said


def test_gc_lists_a_kept_snapshot_and_drops_it_only_when_asked(
    cached: None,
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = pg_source(SOURCE)
    first, _ = _run(pg_servers, source, _change(make_pg_change))
    (cache,) = _caches(pg_servers)
    capsys.readouterr()
    assert main(["gc", "--scratch", pg_servers.scratch]) == 0
    out = capsys.readouterr().out
    assert (
        f"left database {cache}: a snapshot kept for reuse (sealed for source fingerprint "
        f"{first.source_fingerprint.digest}); --drop-caches removes it"
    ) in out
    assert _caches(pg_servers) == {cache}
    assert main(["gc", "--scratch", pg_servers.scratch, "--drop-caches"]) == 0
    out = capsys.readouterr().out
    assert f"removed database {cache}: a snapshot kept for reuse; dropped as asked" in out
    assert _caches(pg_servers) == set()


def test_gc_drop_caches_needs_a_scratch_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gc", "--drop-caches"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(
        "--drop-caches needs --scratch DSN: the server whose caches to drop"
    ), err
