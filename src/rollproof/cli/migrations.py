"""`rollproof rehearse-dir` and `rollproof plan`: the migrations users already have
(rollproof.formats; docs/formats.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from rollproof.cli.app import cli
from rollproof.cli.console import progress, render
from rollproof.cli.options import PATH, json_option, out_option, source_option
from rollproof.formats.model import FORMATS

_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="The migration tool (default: detected from the directory).",
)


@cli.command("rehearse-dir")
@click.argument("directory", type=PATH)
@source_option("The database the migrations are meant for (read only; SQLite or PostgreSQL).")
@_FORMAT
@click.option("--from", "start", default=None, metavar="ID", help="First migration to rehearse.")
@click.option("--to", "end", default=None, metavar="ID", help="Last migration to rehearse.")
@out_option("Where the packets go: OUT/<index>-<id>/ each (default: ./rollproof-dir-<UTC>).")
@click.option(
    "--scratch",
    metavar="DSN",
    default=None,
    help="PostgreSQL source: the server the positions and clones are made on (default: an "
    "ephemeral cluster per rehearsal).",
)
@click.option(
    "--keep-positions",
    "keep_positions",
    type=PATH,
    default=None,
    metavar="DIR",
    help="Keep each later position in DIR (outside OUT; one database copy or pg_dump "
    "archive each), so every packet's RERUN.sh can re-run it.",
)
def rehearse_dir(
    directory: Path,
    source: str,
    fmt: str | None,
    start: str | None,
    end: str | None,
    out: Path | None,
    scratch: str | None,
    keep_positions: Path | None,
) -> None:
    """Rehearse each pending migration of DIRECTORY at its own position, then the whole range.

    Each migration runs at its position: the source itself while nothing is applied, then a
    private copy of the source (SQLite) or a clone on the scratch server (PostgreSQL) with the
    earlier ones applied; its packet goes under OUT/<index>-<id>/. Pending migrations are
    read from the source's own bookkeeping (sqitch's registry, flyway_schema_history,
    DATABASECHANGELOG, schema_migrations, goose_db_version, alembic_version) or start at
    --from. An Alembic
    project runs its env.py (your code) to render each revision as SQL. One line per
    rehearsal; exits with the worst exit code of them.
    """
    from rollproof.formats.detect import dialect_for, load_project
    from rollproof.formats.run import rehearse_range

    project = load_project(directory, fmt, dialect_for(source))
    if out is None:
        out = Path(f"rollproof-dir-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
    with progress() as say:
        run = rehearse_range(
            project,
            source,
            out,
            start=start,
            end=end,
            progress=say,
            scratch=scratch,
            keep_positions=keep_positions,
        )
    total = len(project.migrations)
    if not run.pending:
        click.echo(f"{project.format}: nothing pending in {directory} for this source")
    for step in run.steps:
        m = step.migration
        head = f"{step.label}" if m is None else f"{step.label} ({m.name})"
        where = f" -> {step.packet}" if step.packet else ""
        click.echo(f"{step.verdict:<7} exit {step.exit_code}  {head}: {step.detail}{where}")
        for note in () if m is None else m.notes:
            click.echo(f"        note: {note}")
    if run.steps and any(step.packet for step in run.steps):
        click.echo(f"range packet {out} (RANGE.json lists each packet): rollproof validate {out}")
    click.echo(
        f"{len(run.pending)} of {total} {project.format} migrations rehearsed; source "
        + ("unchanged" if run.source_unchanged else "CHANGED during the run")
        + f" ({run.source_proof} {run.source_sha256})"
    )
    raise SystemExit(run.exit_code)


@cli.command("plan")
@click.argument("directory", type=PATH)
@source_option("The database whose bookkeeping says what is deployed (read only).")
@_FORMAT
@json_option("Print the plan as JSON.")
def plan(directory: Path, source: str, fmt: str | None, as_json: bool) -> None:
    """List DIRECTORY's migrations in order: deployed or pending, reversible or not."""
    from rollproof.formats.bookkeeping import deployed_ids
    from rollproof.formats.detect import dialect_for, load_project

    project = load_project(directory, fmt, dialect_for(source))
    deployed = deployed_ids(project, source)
    rows: list[dict[str, Any]] = []
    for i, m in enumerate(project.migrations, 1):
        state = "unknown" if deployed is None else "deployed" if m.id in deployed else "pending"
        rows.append(
            {
                "index": i,
                "id": m.id,
                "name": m.name,
                "state": state,
                "reversible": m.reversible,
                "why_not_reversible": m.why_not_reversible() or None,
                "no_transaction": m.no_transaction,
                "requires": list(m.requires),
                "notes": list(m.notes),
            }
        )
    doc = {"format": project.format, "directory": str(directory), "migrations": rows}

    def lines() -> Iterator[str]:
        yield f"{project.format} project {directory}: {len(rows)} migrations"
        if deployed is None:
            yield "  (what is deployed cannot be read from this source: give --from to rehearse)"
        for r in rows:
            rev = "reversible" if r["reversible"] else f"NOT reversible ({r['why_not_reversible']})"
            extra = f"; outside a transaction: {r['no_transaction']}" if r["no_transaction"] else ""
            yield f"  {r['index']:>3} {r['state']:<8} {r['id']} ({r['name']}): {rev}{extra}"

    render(as_json, lambda: doc, lines())
