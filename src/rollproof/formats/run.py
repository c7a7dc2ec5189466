"""Rehearse a directory's migrations one position at a time, then the whole range.

For each pending migration in the range, its *position* is the source with every earlier
migration applied (positions.py: the source itself while nothing is applied, then a private
SQLite copy or the PostgreSQL engine's clone on the scratch server; the source is only ever
read, and its digest is taken before and after). The migration is rehearsed there with the
legs, its packet written under `OUT/<index>-<id>/`, and then applied to the position for the
next one. Finally the range as one change (every up, then every down in reverse order) is
rehearsed at the position the range started from, and written under
`OUT/range-<first>-to-<last>/`.

A per-migration round trip is what proves each down: a range round trip alone can look clean
while one migration in it loses data, when an earlier migration's down throws away the table
that data lived in (tests/test_formats_rehearse.py shows one, and
tests/test_formats_postgres.py on PostgreSQL).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rollproof.core.change import Change
from rollproof.core.errors import ExitCode, RollproofError, UsageError
from rollproof.core.model import DEFAULT_LEGS, LegName, Verdict
from rollproof.core.surface import POSTGRESQL, AccessKind
from rollproof.formats.bookkeeping import deployed_ids, is_postgres
from rollproof.formats.changes import change_for, range_change
from rollproof.formats.model import Migration, Project
from rollproof.formats.positions import Positions, PostgresPositions, SqlitePositions
from rollproof.rehearse.flow import RehearsalResult, rehearse
from rollproof.rehearse.packet import write_report
from rollproof.surfaces.scope import Suggestion, suggest
from rollproof.surfaces.static import static_scope
from rollproof.verify.layout import TREE_HASH
from rollproof.verify.range_packet import RANGE_FILE, range_document

Say = Callable[[str], None]
EPHEMERAL = "ephemeral"


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
    """The source's digest before the run: its bytes' sha256 (SQLite) or its content
    fingerprint (PostgreSQL), as `source_proof` says."""
    source_unchanged: bool
    source_proof: str = "sha256"

    @property
    def exit_code(self) -> int:
        codes = [s.exit_code for s in self.steps]
        if not self.source_unchanged:
            codes.append(int(ExitCode.HELD))
        return max(codes, default=0)


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


def _surfaces(
    draft: Change, positions: Positions, start: bool = False
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The reads to declare: what `suggest` gives, plus, on PostgreSQL, the parent of every
    foreign key the change itself makes. `suggest` leaves a key's parent implicit (its check
    reads it), but PostgreSQL needs REFERENCES on it to make a new key, and rollproof's role
    has that only on a declared table (engines/postgres/roles.py)."""
    s: Suggestion = suggest(
        draft, dialect=positions.dialect, catalog=positions.catalog(start=start)
    )
    reads = dict.fromkeys(s.reads)
    if positions.dialect == POSTGRESQL:
        scripts = [x for x in (draft.apply, draft.revert, draft.verify) if x is not None]
        for script in scripts:
            for scope in static_scope(script.text, dialect=POSTGRESQL):
                for i in scope.implied:
                    if i.kind is AccessKind.READ and i.object not in s.writes:
                        reads.setdefault(i.object, None)
    return tuple(sorted(reads)), s.writes


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
    m: Migration | None,
    change: Change,
    dsn: str,
    out: Path,
    *,
    legs: Sequence[LegName],
    no_transaction: str | None,
    workdir: Path | None,
    scratch: str | None,
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
            scratch=scratch if dsn.startswith(("postgres", "pgdump:")) else None,
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
    scratch: str | None = None,
    keep_positions: Path | None = None,
) -> RangeRun:
    """Rehearse every pending migration of `project` in the range at its own position, then
    the range as a whole; each packet under `out`. The source is only read. `scratch` is the
    PostgreSQL server the positions and the rehearsals are made on (default: ephemeral).
    `keep_positions`: a directory where each later position is kept as a file, so the
    packets rehearsed there re-run from it (positions.py)."""
    say = progress or (lambda _msg: None)
    keep = None if keep_positions is None else _keep_dir(keep_positions, out)
    from rollproof.engines.workspace import make_owned_dir

    owned = make_owned_dir("rollproof-positions-", workdir)  # claimed: no sweep takes it
    private = owned.directory
    try:
        positions: Positions
        if is_postgres(source):
            _check_dialect(project, "postgresql")
            positions = PostgresPositions(source, scratch or EPHEMERAL, private, say, workdir, keep)
        else:
            _check_dialect(project, "sqlite")
            if scratch is not None:
                raise UsageError("a scratch server applies only to a PostgreSQL source")
            positions = SqlitePositions(source, private, say, keep)
        try:
            before, chosen = pending_range(project, source, start, end)
            digest = positions.digest()
            steps = _run(project, positions, before, chosen, out, legs, workdir, scratch, say)
        finally:
            positions.close()
        unchanged = positions.digest() == digest
    finally:
        shutil.rmtree(private, ignore_errors=True)
        owned.release()
    write_range_manifest(project, steps, out)
    return RangeRun(project, tuple(chosen), tuple(steps), digest, unchanged, positions.proof)


def _check_dialect(project: Project, dialect: str) -> None:
    """A project loaded for another dialect (Alembic's rendered SQL, Liquibase's `dbms:`) is
    not the one this source runs."""
    loaded = project.options.get("dialect")
    if loaded is not None and loaded != dialect:
        raise UsageError(
            f"this {project.format} project was loaded for {loaded}, and the source is "
            f"{dialect}: load it for {dialect} (load_project(..., dialect={dialect!r}))"
        )


def _keep_dir(directory: Path, out: Path) -> Path:
    """The directory kept positions go to: new or empty, and outside OUT (anything in OUT that
    RANGE.json does not list is refused by the validator). Absolute, as packets record it."""
    keep = directory.resolve()
    if keep == out.resolve() or keep.is_relative_to(out.resolve()):
        raise UsageError(
            f"--keep-positions {directory}: must be outside --out {out} "
            "(a range packet holds only the packets RANGE.json lists)"
        )
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise UsageError(f"--keep-positions {directory}: exists and is not an empty directory")
    keep.mkdir(parents=True, exist_ok=True)
    return keep


def write_range_manifest(project: Project, steps: Sequence[Step], out: Path) -> Path | None:
    """OUT/RANGE.json: every packet written, in order, bound by its tree hash
    (verify/range_packet.py), so `rollproof validate OUT` checks the range as a whole."""
    entries = []
    for step in steps:
        if step.packet is None or step.result is None:
            continue  # not rehearsed: no evidence to list (the run's exit code says it)
        tree = (step.packet / TREE_HASH).read_text("ascii").strip()
        entries.append(
            {
                "dir": step.packet.name,
                "migration": None if step.migration is None else step.migration.id,
                "tree_hash": tree,
                "overall": step.verdict,
                "exit_code": step.exit_code,
            }
        )
    if not entries:
        return None
    target = out / RANGE_FILE
    staging = out / f".{RANGE_FILE}.tmp"
    staging.write_bytes(range_document(entries, project.format))
    staging.replace(target)
    return target


def _run(
    project: Project,
    positions: Positions,
    before: Sequence[Migration],
    chosen: Sequence[Migration],
    out: Path,
    legs: Sequence[LegName],
    workdir: Path | None,
    scratch: str | None,
    say: Say,
) -> list[Step]:
    steps: list[Step] = []
    if chosen:
        out.mkdir(parents=True, exist_ok=True)
    for m in before:
        say(f"applying {m.id} to reach the range's first position")
        positions.apply(m)
    positions.mark_start()
    width = len(str(len(project.migrations)))
    for m in chosen:
        index = project.migrations.index(m) + 1
        label = f"{index:0{width}d}-{change_for(project, m).id}"
        say(f"migration {m.id}: rehearsing at its position")
        reads, writes = _surfaces(change_for(project, m), positions)
        change = change_for(project, m, reads=reads, writes=writes)
        step = _rehearse_one(
            label,
            m,
            change,
            positions.now(),
            out,
            legs=legs,
            no_transaction=m.no_transaction,
            workdir=workdir,
            scratch=scratch,
            say=say,
        )
        steps.append(step)
        if step.result is None:
            break  # not rehearsed: the positions after it are not known
        positions.apply(m)
    if chosen and len(steps) == len(chosen) and all(s.result for s in steps):
        reads, writes = _surfaces(range_change(project, chosen), positions, start=True)
        whole = range_change(project, chosen, reads=reads, writes=writes)
        marker = next((m.no_transaction for m in chosen if m.no_transaction), None)
        steps.append(
            _rehearse_one(
                "range-" + whole.id.removeprefix("range-"),
                None,
                whole,
                positions.start,
                out,
                legs=legs,
                no_transaction=marker,
                workdir=workdir,
                scratch=scratch,
                say=say,
            )
        )
    return steps
