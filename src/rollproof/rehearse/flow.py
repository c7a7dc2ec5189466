"""Rehearse a change on an isolated clone: clone, legs, invariants, result. No printing.

    rehearse(change, source) -> RehearsalResult

Longer than 600 lines because the leg runner and `rehearse` are one sequence over one session
and guard: the leg groups, their judging and the surface evidence read each other's state, and
split apart every part would need all of it.

Order of work, and why:
1. The engine session snapshots the source read-only into a private workspace and checks the
   static isolation items; if they fail nothing else runs (IsolationError, exit 3).
2. The snapshot is fingerprinted once; it is every leg's `before`, since each leg's clone is a
   byte-verified copy of the snapshot.
3. Legs run in three groups, each on a clone that is a byte-verified copy of the snapshot (or
   one a rollback or restore left digest-equal to it), each script on a new connection:
   transaction; read-only and restore (both start from one apply); revert and reapply (reapply
   continues where revert left off). A leg's verdict comes only from `invariants.judge_leg`
   over its recorded fingerprints; script errors and scripts that cannot honestly run in a
   transaction give FAIL or NOT_APPLICABLE with the reason.
4. The isolation proof is finished, and the source is looked at again: whether it moved on
   since the snapshot (others wrote it) is recorded as an observation, never as a failed check.
   A rehearsal whose isolation is not proven is held, whatever its legs say.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollproof.core.change import NO_REVERT, VERIFY_NO_ROWS, Change, no_rows_failure
from rollproof.core.dumps import PGDUMP, SQLITEDUMP, dump_scheme
from rollproof.core.errors import (
    CheckFailedError,
    EnvironmentProblemError,
    ExitCode,
    ScopeNotReadyError,
    UsageError,
)
from rollproof.core.explain import DEFAULT_MAX_EXAMPLES, MAX_EXAMPLES, ShowPolicy, show_examples
from rollproof.core.fingerprint import Difference, Fingerprint, Reuse
from rollproof.core.guard import SurfaceGuard
from rollproof.core.impact import Impact, impact_json, not_measured
from rollproof.core.invariants import InvariantResult, judge_leg
from rollproof.core.isolation import IsolationProof
from rollproof.core.model import (
    DEFAULT_LEGS,
    LegName,
    Point,
    Verdict,
    combine_verdicts,
    overall_verdict,
    rehearsal_exit_code,
)
from rollproof.core.policy import EMPTY_POLICY, Policy
from rollproof.core.surface import POSTGRESQL, Implicit
from rollproof.engines import read_catalog
from rollproof.engines.base import EngineSession, Progress, ScriptOutcome, StatementRows
from rollproof.surfaces.forbidden import (
    env_statuses,
    file_statuses,
    hash_forbidden_files,
    hash_production_sources,
    production_statuses,
)
from rollproof.surfaces.scope import (
    ScopingStatus,
    SurfaceEvidence,
    changed_objects,
    check_scoping,
    object_statuses,
    observed_implicit,
    observed_undeclared,
)

if TYPE_CHECKING:
    from rollproof.engines.postgres.dump import PgDumpSession

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LegResult:
    name: LegName
    verdict: Verdict
    reason: str | None
    fingerprints: Mapping[Point, Fingerprint]
    invariants: tuple[InvariantResult, ...] = ()
    differences: tuple[Difference, ...] = ()
    tolerated: tuple[Difference, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    statements: Mapping[str, int] = field(default_factory=dict)
    verify_rows: tuple[StatementRows, ...] | None = None
    """The read-only leg, once verify ran: each verify statement that returned rows."""
    carried: Mapping[Point, str] = field(default_factory=dict)
    """Points whose fingerprint was carried over instead of read, and from where: "snapshot"
    (a server copy of the sealed snapshot) or "<leg>.<point>" (a copy of the clone in that
    state). report.json's `carried`; the validator checks each against its origin."""


@dataclass(frozen=True, slots=True)
class RehearsalResult:
    change: Change
    source: Mapping[str, Any]
    source_fingerprint: Fingerprint
    isolation: IsolationProof
    legs: tuple[LegResult, ...]
    overall: Verdict
    started_at: datetime
    finished_at: datetime
    clone_kept: Path | None
    surfaces: SurfaceEvidence
    impact: Mapping[str, Any] | None = None
    """report.json's `impact` section (core.impact.impact_json): facts measured on the
    transaction leg's apply, never part of a verdict."""

    @property
    def exit_code(self) -> ExitCode:
        return rehearsal_exit_code(
            self.isolation.verdict, self.overall, denied=self.surfaces.denied
        )


def parse_legs(names: Sequence[str] | None) -> tuple[LegName, ...]:
    """Requested legs in canonical order; unknown names are a usage error."""
    if not names:
        return DEFAULT_LEGS
    valid = {leg.value: leg for leg in LegName}
    chosen = set()
    for raw in names:
        for name in raw.split(","):
            name = name.strip()
            if name not in valid:
                raise UsageError(f"unknown leg {name!r}; legs are: {', '.join(valid)}")
            chosen.add(valid[name])
    return tuple(leg for leg in LegName if leg in chosen)


def is_postgres_dsn(dsn: str) -> bool:
    return dsn.startswith(("postgres://", "postgresql://"))


def open_pg_dump(
    dsn: str,
    scratch: str | None,
    workdir: Path | None,
    progress: Progress,
    forbidden_env: Sequence[str] = (),
) -> PgDumpSession | None:
    """A `pgdump:PATH` source restored on its scratch server (not yet armed), else None."""
    if dump_scheme(dsn) != PGDUMP:
        return None
    from rollproof.engines.postgres.dump import PgDumpSession

    return PgDumpSession(
        dsn,
        scratch=scratch or "ephemeral",
        workdir=workdir,
        progress=progress,
        forbidden_env=forbidden_env,
    )


def dialect_for(dsn: str) -> str:
    """The SQL dialect a source's change scripts are read in (static scope, lint)."""
    return POSTGRESQL if is_postgres_dsn(dsn) or dump_scheme(dsn) == PGDUMP else "sqlite"


def open_session(
    dsn: str,
    *,
    workdir: Path | None,
    progress: Progress,
    guard: SurfaceGuard | None = None,
    scratch: str | None = None,
) -> EngineSession:
    """Pick the engine for a DSN. Engines are the only modules that know a dialect.

    `scratch` names where a PostgreSQL source is cloned: a server DSN, or "ephemeral" (the
    default) for a private cluster rollproof starts; a SQLite source takes no scratch server.
    """
    dump = open_pg_dump(dsn, scratch, workdir, progress)
    if dump is not None:
        try:
            return dump.arm(guard)
        except BaseException:
            dump.close(keep=False)
            raise
    if is_postgres_dsn(dsn):
        from rollproof.engines.postgres.session import PostgresSession

        return PostgresSession(
            dsn,
            scratch=scratch or "ephemeral",
            workdir=workdir,
            progress=progress,
            guard=guard,
        )
    if scratch is not None:
        raise UsageError("a scratch server applies only to a PostgreSQL source")
    if dump_scheme(dsn) == SQLITEDUMP:
        from rollproof.engines.sqlite.dump import SqliteDumpSession

        return SqliteDumpSession(dsn, workdir=workdir, progress=progress, guard=guard)
    from rollproof.engines.sqlite.session import SqliteSession

    return SqliteSession(dsn, workdir=workdir, progress=progress, guard=guard)


class _LegRunner:
    def __init__(
        self,
        session: EngineSession,
        change: Change,
        before: Fingerprint,
        guard: SurfaceGuard,
        *,
        full_fingerprints: bool,
        show: ShowPolicy | None = None,
        no_transaction: str | None = None,
    ) -> None:
        self.s = session
        self.no_transaction = no_transaction
        """Set when the change's own tool runs it outside a transaction: the marker, named."""
        self.change = change
        self.before = before
        self.guard = guard
        self.full = full_fingerprints
        self.show = show or ShowPolicy()
        self.pristine = False
        """True when the clone is known to be the snapshot's exact state (after a rollback that
        came back digest-equal), so the next leg need not copy the snapshot again."""
        self.implicit: list[Implicit] = []
        """What the clone's catalog says the database made for its tables after apply (an
        engine that can tell: a new partition's automatic index, for one)."""
        self.impact: Impact | None = None
        """What the transaction leg's apply measured, statement by statement (core.impact)."""
        self.branched: tuple[Fingerprint, ScriptOutcome, dict[str, int]] | None = None
        """The restore leg's committed apply, kept as a copy for the revert leg (`branch`)."""

    def carried(self) -> Fingerprint | None:
        """The clone's fingerprint when the engine holds it by construction (a server copy of
        the sealed snapshot); never with `--full-fingerprints`, which reads every point."""
        ask = getattr(self.s, "carried_fingerprint", None)
        return None if self.full or ask is None else ask()

    def fresh(self) -> None:
        if not self.pristine:
            self.s.fresh_clone()
            copies = getattr(self.s, "carried_fingerprint", None) is not None
            # --full-fingerprints: a copy is read like everything else.
            if copies and self.full and self.s.fingerprint_clone().digest != self.before.digest:
                raise EnvironmentProblemError("working clone does not match the snapshot")
        self.pristine = False

    def reuse(self, *roles: str) -> Reuse | None:
        """What an after-fingerprint may take from `before`: everything the roles did not write.

        The write sets come from the engine's run-time record (see fingerprint.Reuse for why
        that is sound), so a leg's after-fingerprints cost what the change touched.
        """
        if self.full:
            return None
        written = self.guard.written_by(*roles)
        return None if written is None else Reuse(self.before, written)

    def judge(
        self,
        leg: LegName,
        points: dict[Point, Fingerprint],
        statements: dict[str, int],
        settings: Mapping[str, Any],
        *,
        explain_last: bool = True,
        carried: Mapping[Point, str] | None = None,
    ) -> LegResult:
        j = judge_leg(
            leg,
            points,
            no_mutation=self.change.no_mutation,
            strict_sequences=self.change.strict_sequences,
        )
        differences: list[Difference] = []
        tolerated: list[Difference] = []
        for r in j.results:
            if r.invariant.op != "==":
                continue  # a tolerated advance under `after_apply != before` is the change's own
            tolerated.extend(r.tolerated)
            if r.holds:
                continue
            # The clone is still in the state of the last point: explain it row by row.
            if (
                explain_last
                and r.invariant.right is Point.BEFORE
                and r.invariant.left == list(points)[-1]
            ):
                differences.extend(shown(d, self.show) for d in self.s.explain(r.differences))
            else:
                differences.extend(r.differences)
        reason = j.reason
        if j.verdict is Verdict.FAIL and differences and reason and "does not hold" in reason:
            first = next(r for r in j.results if not r.holds)
            reason = f"{first.invariant} does not hold: " + "; ".join(
                d.summary for d in differences
            )
        return LegResult(
            leg,
            j.verdict,
            reason,
            dict(points),
            j.results,
            tuple(differences),
            tuple(tolerated),
            settings,
            statements,
            carried=dict(carried or {}),
        )

    def failed(
        self,
        leg: LegName,
        what: str,
        outcome: ScriptOutcome,
        points: dict[Point, Fingerprint],
        statements: dict[str, int],
        carried: Mapping[Point, str] | None = None,
    ) -> LegResult:
        """A leg a script stopped; `carried` says which of its points were carried over (a
        failed leg's report is as true about where its points came from as a judged one's)."""
        mine = {p: o for p, o in (carried or {}).items() if p in points}
        if outcome.not_applicable is not None:
            return LegResult(
                leg,
                Verdict.NOT_APPLICABLE,
                f"{what}: {outcome.not_applicable}",
                dict(points),
                settings=outcome.settings,
                statements=statements,
                carried=mine,
            )
        return LegResult(
            leg,
            Verdict.FAIL,
            f"{what} failed: {outcome.error}",
            dict(points),
            settings=outcome.settings,
            statements=statements,
            carried=mine,
        )

    def apply_committed(
        self, points: dict[Point, Fingerprint], statements: dict[str, int]
    ) -> ScriptOutcome:
        self.fresh()
        points[Point.BEFORE] = self.before
        out = self.s.run_script("apply", self.change.apply, self.change.connection)
        statements["apply"] = out.statements_run
        if out.ok:
            points[Point.AFTER_APPLY] = self.s.fingerprint_clone(self.reuse("apply"))
            made = getattr(self.s, "implicit_objects", None)
            if made is not None:
                self.implicit.extend(made())
        return out

    def transaction(self, restore_next: bool) -> dict[LegName, LegResult]:
        leg = LegName.TRANSACTION
        if self.no_transaction is not None:
            why = f"the migration is marked to run outside a transaction: {self.no_transaction}"
            return {leg: LegResult(leg, Verdict.NOT_APPLICABLE, why, {})}
        self.fresh()
        if restore_next:
            # The restore leg will want a copy of the snapshot: an engine may make it while
            # this leg runs (on SQLite, on a core this leg leaves idle).
            self.s.prepare_clone()
        points: dict[Point, Fingerprint] = {Point.BEFORE: self.before}
        t = self.s.run_in_transaction(
            self.change.apply, self.change.connection, None if self.full else self.before
        )
        statements = {"apply": t.script.statements_run}
        self.impact = t.impact
        if not t.script.ok or t.after_apply is None:
            return {leg: self.failed(leg, "apply", t.script, points, statements)}
        points[Point.AFTER_APPLY] = t.after_apply
        points[Point.AFTER_ROLLBACK] = self.s.fingerprint_clone(self.reuse("apply"))
        # ROLLBACK put the pages back; digest-equal (sequences included) means the next leg
        # may start from here instead of from a new copy of the snapshot.
        self.pristine = points[Point.AFTER_ROLLBACK].digest == self.before.digest
        return {leg: self.judge(leg, points, statements, t.script.settings)}

    def applied_then_restored(self, wanted: frozenset[LegName]) -> dict[LegName, LegResult]:
        """The read-only and restore legs, from one apply: both begin in the applied state.

        apply and COMMIT; fingerprint (after_apply); the read-only leg runs `verify` on a
        read-only connection (entry is that state, exit is fingerprinted); then the restore leg
        copies the snapshot back and fingerprints. `verify` runs on a connection that cannot
        write, so the state the restore leg restores from is the one it recorded; if `verify`
        did write, the read-only leg says so and the restore leg still restores from a clone
        whose every write is in the engine's record.
        """
        results: dict[LegName, LegResult] = {}
        want_ro = LegName.READ_ONLY in wanted
        if want_ro and self.change.verify is None:
            results[LegName.READ_ONLY] = LegResult(
                LegName.READ_ONLY, Verdict.NOT_APPLICABLE, "the change has no verify script", {}
            )
            want_ro = False
        want_restore = LegName.RESTORE in wanted
        if not (want_ro or want_restore):
            return results
        points: dict[Point, Fingerprint] = {}
        statements: dict[str, int] = {}
        out = self.apply_committed(points, statements)
        if not out.ok:
            if want_ro:
                results[LegName.READ_ONLY] = self.failed(
                    LegName.READ_ONLY, "apply", out, {}, dict(statements)
                )
            if want_restore:
                results[LegName.RESTORE] = self.failed(
                    LegName.RESTORE, "apply", out, points, statements
                )
            return results
        if want_restore and self.branches(wanted):
            # The revert leg starts from this committed apply too: a server copy of the clone
            # now (it carries after_apply) spares it a second apply and its read.
            self.s.branch()  # type: ignore[attr-defined]
            self.branched = (points[Point.AFTER_APPLY], out, dict(statements))
        if want_ro:
            results[LegName.READ_ONLY] = self.read_only(points[Point.AFTER_APPLY], statements, out)
        if want_restore:
            self.s.restore_clone()
            carried = self.carried()
            if carried is None:
                points[Point.AFTER_RESTORE] = self.s.fingerprint_clone(
                    self.reuse("apply", "verify")
                )
            else:
                points[Point.AFTER_RESTORE] = carried
            self.pristine = points[Point.AFTER_RESTORE].digest == self.before.digest
            results[LegName.RESTORE] = self.judge(
                LegName.RESTORE,
                points,
                {"apply": statements["apply"]},
                out.settings,
                carried={} if carried is None else {Point.AFTER_RESTORE: "snapshot"},
            )
        return results

    def branches(self, wanted: frozenset[LegName]) -> bool:
        """Whether the revert group will continue from a copy of the restore group's apply:
        an engine that copies a clone with its fingerprint (PostgreSQL), a revert to run, and
        no `--full-fingerprints` (which applies and reads every leg on its own)."""
        return (
            not self.full
            and getattr(self.s, "branch", None) is not None
            and self.change.revert is not None
            and bool({LegName.REVERT, LegName.REAPPLY} & wanted)
        )

    def read_only(
        self, applied: Fingerprint, apply_statements: Mapping[str, int], out: ScriptOutcome
    ) -> LegResult:
        """Run `verify` read-only on the applied clone: entry and exit fingerprints.

        Entry is the applied state just fingerprinted (nothing has run on the clone since, so
        every table is taken from it and only the schema and sequences are read again).
        `verify_expect = "no-rows"`: a statement that returned rows fails it (counts recorded).
        """
        leg = LegName.READ_ONLY
        assert self.change.verify is not None
        statements = dict(apply_statements)
        entry_reuse = None if self.full else Reuse(applied, frozenset())
        ro = self.s.run_read_only(self.change.verify, entry_reuse)
        points = {Point.ENTRY: ro.entry, Point.EXIT: ro.exit}
        found: tuple[StatementRows, ...] = ()
        script = ro.script
        if script is not None:
            statements["verify"], found = script.statements_run, script.rows
            if script.ok and found and self.change.verify_expect == VERIFY_NO_ROWS:
                why = no_rows_failure([(r.statement, r.text, r.rows) for r in found])
                script = replace(script, error=why)
            if not script.ok:
                failed = self.failed(leg, "verify (read-only)", script, points, statements)
                return replace(failed, verify_rows=found)
        judged = self.judge(leg, points, statements, out.settings, explain_last=False)
        return judged if script is None else replace(judged, verify_rows=found)

    def reverted_then_reapplied(self, wanted: frozenset[LegName]) -> dict[LegName, LegResult]:
        """The revert leg and, continuing on the same clone, the reapply leg.

        apply and COMMIT; fingerprint; revert; fingerprint (the revert leg); then apply again
        and fingerprint (the reapply leg, which by definition starts where revert left off).
        """
        legs = [leg for leg in (LegName.REVERT, LegName.REAPPLY) if leg in wanted]
        if self.change.revert is None:
            return {leg: LegResult(leg, Verdict.NOT_APPLICABLE, NO_REVERT, {}) for leg in legs}
        points: dict[Point, Fingerprint] = {}
        statements: dict[str, int] = {}
        carried: dict[Point, str] = {}
        if self.branched is not None:
            # The restore leg's committed apply, copied before it was restored: the copy holds
            # the state its after_apply fingerprint read.
            applied, out, statements = self.branched
            self.branched = None
            self.s.take_branch()  # type: ignore[attr-defined]
            points = {Point.BEFORE: self.before, Point.AFTER_APPLY: applied}
            carried[Point.AFTER_APPLY] = f"{LegName.RESTORE}.{Point.AFTER_APPLY}"
        else:
            out = self.apply_committed(points, statements)
        if not out.ok:
            return {leg: self.failed(leg, "apply", out, points, statements) for leg in legs}
        rv = self.s.run_script("revert", self.change.revert, self.change.connection)
        statements["revert"] = rv.statements_run
        if not rv.ok:
            return {
                leg: self.failed(leg, "revert", rv, points, statements, carried) for leg in legs
            }
        points[Point.AFTER_REVERT] = self.s.fingerprint_clone(self.reuse("apply", "revert"))
        results: dict[LegName, LegResult] = {}
        if LegName.REVERT in wanted:
            # Judged now: a failing revert is explained from the clone in its reverted state.
            results[LegName.REVERT] = self.judge(
                LegName.REVERT, dict(points), dict(statements), out.settings, carried=carried
            )
        if LegName.REAPPLY not in wanted:
            return results
        leg = LegName.REAPPLY
        again = self.s.run_script("reapply", self.change.apply, self.change.connection)
        statements["reapply"] = again.statements_run
        if not again.ok:
            results[leg] = self.failed(leg, "reapply", again, points, statements, carried)
            return results
        points[Point.AFTER_REAPPLY] = self.s.fingerprint_clone(
            self.reuse("apply", "revert", "reapply")
        )
        results[leg] = self.judge(
            leg, points, statements, out.settings, explain_last=False, carried=carried
        )
        return results

    def run(self, legs: Sequence[LegName], say: Callable[[str], None]) -> dict[LegName, LegResult]:
        """Run the requested legs in groups that share work, and return each leg's result.

        Three groups, each on one clone: transaction; read-only + restore (one apply); revert +
        reapply (one apply, one revert). A rolled-back or restored clone that is digest-equal
        to the snapshot serves the next group without a new copy.
        """
        wanted = frozenset(legs)
        groups: list[tuple[frozenset[LegName], Callable[[], dict[LegName, LegResult]]]] = [
            (
                frozenset({LegName.TRANSACTION}),
                lambda: self.transaction(restore_next=LegName.RESTORE in wanted),
            ),
            (
                frozenset({LegName.READ_ONLY, LegName.RESTORE}),
                lambda: self.applied_then_restored(wanted),
            ),
            (
                frozenset({LegName.REVERT, LegName.REAPPLY}),
                lambda: self.reverted_then_reapplied(wanted),
            ),
        ]
        results: dict[LegName, LegResult] = {}
        done = 0
        for members, step in groups:
            mine = [leg for leg in LegName if leg in members & wanted]
            if not mine:
                continue
            names = ", ".join(str(leg) for leg in mine)
            span = f"{done + 1}" if len(mine) == 1 else f"{done + 1}-{done + len(mine)}"
            say(f"leg{'s' if len(mine) > 1 else ''} {span}/{len(wanted)}: {names}")
            results.update(step())
            done += len(mine)
        return results


def shown(d: Difference, show: ShowPolicy) -> Difference:
    """`d` with its example rows turned into what the report may show (`show_examples`)."""
    if d.rows is None:
        return d
    detail = {**d.detail, **show_examples(d.rows.table, d.rows.examples, d.rows.total, show)}
    return replace(d, detail=detail, rows=None)


def rehearse(
    change: Change,
    source: str,
    *,
    legs: Sequence[LegName] = DEFAULT_LEGS,
    workdir: Path | None = None,
    keep_clone: bool = False,
    progress: Progress | None = None,
    clock: Clock = utc_now,
    policy: Policy = EMPTY_POLICY,
    allow_undeclared: bool = False,
    scratch: str | None = None,
    full_fingerprints: bool = False,
    before_legs: Callable[[Fingerprint], None] | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    no_transaction: str | None = None,
) -> RehearsalResult:
    """Rehearse `change` against a clone of `source` and return every leg's proof.

    Raises ScopeNotReadyError before anything is cloned when the change touches undeclared
    objects (unless `allow_undeclared`), and IsolationError when the clone cannot be isolated.
    `scratch` is where a PostgreSQL source is cloned (see `open_session`). `before_legs` is
    called with the source snapshot's fingerprint before any leg runs; if it raises, nothing
    runs (a governed rehearsal consumes its grant there, against the state it will rehearse).
    `max_examples` is how many rows per table a failing leg shows (key, old -> new; 0 to
    1000); no value of a forbidden object or of a `[secrets] columns` column is ever shown.
    `no_transaction` names the marker by which a migration's tool runs it outside a
    transaction (rollproof.formats): the transaction leg is then NOT_APPLICABLE, saying so.
    """
    if not 0 <= max_examples <= MAX_EXAMPLES:
        raise UsageError(f"max_examples must be between 0 and {MAX_EXAMPLES}, not {max_examples}")
    # Legs run and are reported in rollproof's order, however the caller listed them (a packet
    # whose legs are out of order, or repeated, is not valid evidence).
    legs = tuple(leg for leg in LegName if leg in set(legs))
    say = progress or (lambda _msg: None)
    started = clock()
    # A pg_dump archive has no catalog until it is restored: it is restored first, then scoped
    # like any source, then armed with the guard (engines/postgres/dump.py).
    dump = open_pg_dump(source, scratch, workdir, say, policy.forbidden_env)
    try:
        # read-only: what the database makes for declared objects
        catalog = read_catalog(source) if dump is None else dump.catalog()
        scoping = check_scoping(change, dialect=dialect_for(source), catalog=catalog)
        if scoping.syntax_errors:
            raise CheckFailedError(
                "the change's SQL does not parse: " + "; ".join(scoping.syntax_errors)
            )
        if scoping.status is not ScopingStatus.READY and not allow_undeclared:
            raise ScopeNotReadyError(str(scoping.status), scoping.problems())
        files_before = hash_forbidden_files(policy)
        production_before = hash_production_sources(policy)
        guard = SurfaceGuard(
            reads=change.reads,
            writes=change.writes,
            forbidden=policy.forbidden_objects,
            read_mode=policy.undeclared_reads,
            forbidden_env=policy.forbidden_env,
            implicit=scoping.catalog_implicit,
        )
        session = (
            open_session(source, workdir=workdir, progress=say, guard=guard, scratch=scratch)
            if dump is None
            else dump.arm(guard)
        )
    except BaseException:
        if dump is not None:
            dump.close(keep=False)
        raise
    kept: Path | None = None
    try:
        before = session.snapshot_fingerprint()
        if before_legs is not None:
            before_legs(before)
        show = ShowPolicy(
            max_examples=max_examples,
            secret_columns=policy.secret_columns,
            forbidden_objects=policy.forbidden_objects,
        )
        runner = _LegRunner(
            session,
            change,
            before,
            guard,
            full_fingerprints=full_fingerprints,
            show=show,
            no_transaction=no_transaction or change.no_transaction,
        )
        made = runner.implicit
        # Legs run in groups that share work (see _LegRunner.run); they are reported in the
        # order requested.
        by_leg = runner.run(legs, say)
        results = [by_leg[leg] for leg in legs]
        impact = impact_json(
            runner.impact or not_measured(session.engine, _unmeasured(by_leg)),
            rows_before={name: t.rows for name, t in before.tables.items()},
            change_limits=change.impact_limits,
            policy_limits=policy.impact_limits,
        )
        say("looking at the source again: has it moved on since the snapshot?")
        isolation = session.finish_isolation()
        source_info = session.describe_source()
    finally:
        kept = session.close(keep=keep_clone)
    changed: set[str] = set()
    for r in results:
        if Point.BEFORE in r.fingerprints and Point.AFTER_APPLY in r.fingerprints:
            changed |= changed_objects(
                r.fingerprints[Point.BEFORE], r.fingerprints[Point.AFTER_APPLY]
            )
    forbidden = (
        object_statuses(policy.forbidden_objects, before, changed, scoping, guard.events)
        + file_statuses(files_before, hash_forbidden_files(policy))
        + env_statuses(policy)
        + production_statuses(
            policy,
            production_before,
            hash_production_sources(policy),
            lambda dsn: session.is_source(dsn, policy.directory),
            isolation,
        )
    )
    known = [*scoping.catalog_implicit, *made]
    surfaces = SurfaceEvidence(
        scoping=scoping,
        allow_undeclared=allow_undeclared,
        read_mode=str(policy.undeclared_reads),
        events=tuple(guard.events),
        observed_changed=tuple(sorted(changed)),
        observed_undeclared=tuple(observed_undeclared(changed, change.writes, known)),
        forbidden=tuple(forbidden),
        policy=policy.describe(),
        implicit=tuple(
            dict.fromkeys(
                [
                    *scoping.implicit,
                    *guard.covered.values(),
                    *observed_implicit(changed, change.writes, known),
                ]
            )
        ),
    )
    overall = combine_verdicts(
        overall_verdict([r.verdict for r in results], [r.name for r in results]), surfaces.verdict
    )
    return RehearsalResult(
        change=change,
        source=source_info,
        source_fingerprint=before,
        isolation=isolation,
        legs=tuple(results),
        overall=overall,
        started_at=started,
        finished_at=clock(),
        clone_kept=kept,
        surfaces=surfaces,
        impact=impact,
    )


def _unmeasured(legs: Mapping[LegName, LegResult]) -> str:
    """Why there is no measured impact: it is measured inside the transaction leg's open
    transaction, so without that leg run to its end there is none."""
    leg = legs.get(LegName.TRANSACTION)
    if leg is None:
        return "the transaction leg was not run; impact is measured inside its transaction"
    return f"the transaction leg's apply did not run to its end: {leg.reason}"
