"""`rollproof gc`: remove what runs that died left behind (workspaces, partial packets, and
their databases and roles on a named PostgreSQL scratch server)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import click

from rollproof.cli.app import cli
from rollproof.cli.console import render
from rollproof.cli.options import json_option, path_option


@cli.command()
@path_option(
    "--workdir",
    "workdirs",
    multiple=True,
    help="Also sweep this --workdir (the temporary directory is always swept); may be repeated.",
)
@path_option(
    "--packets",
    "packet_roots",
    multiple=True,
    help="Sweep partial packets under this directory (default: .rollproof/packets).",
)
@click.option(
    "--scratch",
    "scratch_servers",
    multiple=True,
    metavar="DSN",
    help="Also sweep this PostgreSQL scratch server: drop the rollproof databases and roles "
    "whose run is provably gone; may be repeated.",
)
@click.option(
    "--drop-caches",
    is_flag=True,
    help="With --scratch: also drop the snapshots kept for reuse (rollproof_cache_*, made when "
    "ROLLPROOF_PG_SNAPSHOT_CACHE=1); without it they are listed and left. Not while a rehearsal "
    "of that server runs: it would fail (exit 4).",
)
@json_option("Print what was removed as JSON.")
def gc(
    workdirs: tuple[Path, ...],
    packet_roots: tuple[Path, ...],
    scratch_servers: tuple[str, ...],
    drop_caches: bool,
    as_json: bool,
) -> None:
    """Remove workspaces (copies of production), fingerprint sort directories
    (`rollproof-sort-*`), partial packets and scratch databases of runs that are gone.

    A run holds a lock on its directory for as long as it lives, so a live run's directory, and
    the scratch databases that name it as their owner, are never removed; kept clones
    (--keep-clone) are left for you to remove."""
    from rollproof.core.errors import UsageError
    from rollproof.engines.workspace import sweep

    if drop_caches and not scratch_servers:
        raise UsageError("--drop-caches needs --scratch DSN: the server whose caches to drop")
    # Directories first: a dead run's workspace that is gone is part of what proves its
    # scratch databases ownerless.
    removed = sweep([Path(tempfile.gettempdir()), *workdirs])
    removed += sweep(list(packet_roots) or [Path(".rollproof/packets")], partial_only=True)
    servers = [_sweep_server(dsn, drop_caches) for dsn in scratch_servers]
    lines = [f"removed {p}" for p in removed]
    for shown, objects in servers:
        lines += [f"scratch {shown}: {o['line']}" for o in objects]
    count = len(removed) + sum(o["removed"] is True for _s, objs in servers for o in objs)
    render(
        as_json,
        lambda: {
            "removed": [str(p) for p in removed],
            "scratch": [{"server": shown, "objects": objs} for shown, objs in servers],
        },
        [*lines, f"gc: {count} removed"],
    )


def _sweep_server(dsn: str, drop_caches: bool) -> tuple[str, list[dict[str, object]]]:
    """Sweep one scratch server: (its DSN as shown, each rollproof object with its fate)."""
    import psycopg

    from rollproof.core.errors import EnvironmentProblemError, UsageError
    from rollproof.core.redact import redact_dsn
    from rollproof.engines.postgres.conn import (
        connect,
        describe_error,
        is_postgres_dsn,
        parse_pg_dsn,
    )
    from rollproof.engines.postgres.snapcache import caches
    from rollproof.engines.postgres.sweep import sweep_scratch

    if not is_postgres_dsn(dsn):
        raise UsageError(f"--scratch {redact_dsn(dsn)}: name a PostgreSQL server (postgresql://…)")
    target = parse_pg_dsn(dsn, what="scratch")
    with contextlib.closing(connect(target, what="scratch")) as conn:
        try:
            found = sweep_scratch(conn) + caches(conn, remove=drop_caches)
        except psycopg.Error as e:
            raise EnvironmentProblemError(
                f"scratch {target.shown}: cannot list its databases and roles: {describe_error(e)}"
            ) from None
    return target.shown, [
        {"name": o.name, "kind": o.kind, "removed": o.removed, "why": o.why, "line": str(o)}
        for o in found
    ]
