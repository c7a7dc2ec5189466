"""Rehearse a directory's migrations one position at a time, then the whole range.

For each pending migration in the range, a *position source* is a private copy of the source
with every earlier migration applied (the source itself is only ever read: its bytes are hashed
before and after). The migration is rehearsed there with the legs, its packet written under
`OUT/<index>-<id>/`, and then applied to the position copy for the next one. Finally the range
as one change (every up, then every down in reverse order) is rehearsed on a copy of the
position the range started from, and written under `OUT/range-<first>-to-<last>/`.

A per-migration round trip is what proves each down: a range round trip alone can look clean
while one migration in it loses data, when an earlier migration's down throws away the table
that data lived in (tests/test_formats_rehearse.py shows one). SQLite sources only, so far.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rollproof.core.change import Change
from rollproof.core.errors import ExitCode, RollproofError, UsageError
from rollproof.core.model import DEFAULT_LEGS, LegName, Verdict
from rollproof.engines import read_catalog
from rollproof.engines.sqlite.session import connect_read_only, parse_sqlite_dsn
from rollproof.formats.bookkeeping import deployed_ids, is_postgres
from rollproof.formats.changes import change_for, range_change
from rollproof.formats.model import Migration, Project
from rollproof.rehearse.flow import RehearsalResult, rehearse
from rollproof.rehearse.packet import write_report
from rollproof.surfaces.scope import suggest

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Step:
    """One rehearsal of the run: a migration at its position, or the whole range."""

    label: str
    migration: Migration | None
    """None for the range."""
    exit_code: int
    verdict: str
    detail: str
    packet: Path | None
    result: RehearsalResult | None


@dataclass(frozen=True, slots=True)
class RangeRun:
    project: Project
    pending: tuple[Migration, ...]
    steps: tuple[Step, ...]
    source_sha256: str
    source_unchanged: bool

    @property
    def exit_code(self) -> int:
        codes = [s.exit_code for s in self.steps]
        if not self.source_unchanged:
            codes.append(int(ExitCode.HELD))
        return max(codes, default=0)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pending_range(
    project: Project, source: str, start: str | None, end: str | None
) -> tuple[list[Migration], list[Migration]]:
    """(migrations to apply to reach the range's first position, the range itself)."""
    deployed = deployed_ids(project, source)
    ms = list(project.migrations)
    if start is not None:
        first = project.index_of(start)
    elif deployed is None:
        raise UsageError(
            f"cannot read which {project.format} migrations {source} already has: "
            "give --from ID (the first migration not deployed there)"
        )
    else:
        first = next((i for i, m in enumerate(ms) if m.id not in deployed), len(ms))
    last = project.index_of(end) if end is not None else len(ms) - 1
    if first < len(ms) and last < first:
        raise UsageError(f"--to {ms[last].id} comes before the first migration {ms[first].id}")
    chosen = ms[first : last + 1]
    if deployed is not None:
        if chosen and chosen[0].id in deployed:
            raise UsageError(
                f"migration {chosen[0].id} is already deployed in the source: "
                "the range must start at a pending migration"
            )
        # A deployed migration inside the range (another Alembic branch, a dbmate or goose
        # version applied out of order) is already in the position: the range skips it.
        chosen = [m for m in chosen if m.id not in deployed]
        before = [m for m in ms[:first] if m.id not in deployed]
    else:
        before = []  # without bookkeeping, --from says everything before it is deployed
    return before, chosen


def _apply(position: Path, m: Migration) -> None:
    with contextlib.closing(sqlite3.connect(position, isolation_level=None)) as conn:
        try:
            conn.executescript(m.apply.text)
        except sqlite3.Error as e:
            raise UsageError(
                f"migration {m.id} ({m.apply.path}) cannot be applied to reach the next "
                f"position: {e}"
            ) from e


def _surfaces(change: Change, dsn: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    s = suggest(change, dialect="sqlite", catalog=read_catalog(dsn))
    return s.reads, s.writes


def _detail(result: RehearsalResult) -> str:
    """The failing legs' reasons, or which legs passed."""
    for verdict in (Verdict.FAIL, Verdict.UNKNOWN):
        bad = [leg for leg in result.legs if leg.verdict is verdict]
        if bad:
            return "; ".join(f"{leg.name}: {leg.reason}" for leg in bad)
    if result.surfaces.verdict is not Verdict.PASS:
        return f"surfaces: {result.surfaces.verdict}"
    passed = [str(leg.name) for leg in result.legs if leg.verdict is Verdict.PASS]
    skipped = [str(leg.name) for leg in result.legs if leg.verdict is Verdict.NOT_APPLICABLE]
    text = "passed: " + ", ".join(passed)
    return text + (f" (not applicable: {', '.join(skipped)})" if skipped else "")


def _rehearse_one(
    label: str,
    project: Project,
    m: Migration | None,
    change: Change,
    dsn: str,
    out: Path,
    *,
    legs: Sequence[LegName],
    no_transaction: str | None,
    workdir: Path | None,
    say: Say,
) -> Step:
    try:
        result = rehearse(
            change,
            dsn,
            legs=legs,
            workdir=workdir,
            progress=say,
            no_transaction=no_transaction,
        )
    except RollproofError as e:
        return Step(label, m, int(e.exit_code), "ERROR", str(e), None, None)
    packet = write_report(result, out / label)
    return Step(
        label, m, int(result.exit_code), str(result.overall), _detail(result), packet, result
    )


def rehearse_range(
    project: Project,
    source: str,
    out: Path,
    *,
    start: str | None = None,
    end: str | None = None,
    legs: Sequence[LegName] = DEFAULT_LEGS,
    workdir: Path | None = None,
    progress: Say | None = None,
) -> RangeRun:
    """Rehearse every pending migration of `project` in the range at its own position, then
    the range as a whole; each packet under `out`. The source is only read."""
    say = progress or (lambda _msg: None)
    if is_postgres(source):
        raise UsageError(
            "per-migration positions are built for SQLite sources only so far "
            "(docs/formats.md): rehearse a PostgreSQL migration with `rollproof rehearse`"
        )
    src = parse_sqlite_dsn(source)
    if not src.is_file():
        raise UsageError(f"source {src}: no such file")
    before, chosen = pending_range(project, source, start, end)
    digest = _sha256(src)
    steps: list[Step] = []
    if chosen:
        out.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="rollproof-positions-", dir=workdir))
    try:
        position = private / "position.db"
        with (
            contextlib.closing(connect_read_only(src)) as ro,
            contextlib.closing(sqlite3.connect(position)) as copy,
        ):
            ro.backup(copy)
        for m in before:
            say(f"applying {m.id} to reach the range's first position")
            _apply(position, m)
        start_copy = private / "range-start.db"
        shutil.copyfile(position, start_copy)
        width = len(str(len(project.migrations)))
        for m in chosen:
            index = project.migrations.index(m) + 1
            label = f"{index:0{width}d}-{change_for(project, m).id}"
            say(f"migration {m.id}: rehearsing at its position")
            draft = change_for(project, m)
            reads, writes = _surfaces(draft, str(position))
            change = change_for(project, m, reads=reads, writes=writes)
            step = _rehearse_one(
                label,
                project,
                m,
                change,
                str(position),
                out,
                legs=legs,
                no_transaction=m.no_transaction,
                workdir=workdir,
                say=say,
            )
            steps.append(step)
            if step.result is None:
                break  # not rehearsed: the positions after it are not known
            _apply(position, m)
        if chosen and len(steps) == len(chosen) and all(s.result for s in steps):
            draft = range_change(project, chosen)
            reads, writes = _surfaces(draft, str(start_copy))
            whole = range_change(project, chosen, reads=reads, writes=writes)
            marker = next((m.no_transaction for m in chosen if m.no_transaction), None)
            steps.append(
                _rehearse_one(
                    "range-" + whole.id.removeprefix("range-"),
                    project,
                    None,
                    whole,
                    str(start_copy),
                    out,
                    legs=legs,
                    no_transaction=marker,
                    workdir=workdir,
                    say=say,
                )
            )
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return RangeRun(project, tuple(chosen), tuple(steps), digest, _sha256(src) == digest)
