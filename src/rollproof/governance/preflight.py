"""Preflight: the checks a governed run makes before it acts, read from the ledger's bytes.

    run_preflight(policy, change, source, lane=..., now=...) -> Preflight

Each check is PASS, FAIL or UNKNOWN (`rollproof.core.model.Verdict`):

    surface-scoping          the change declares every object its scripts touch (READY)
    no-production-execution  every registered production source is one rollproof only ever
                             opens read-only (SQLite mode=ro, PostgreSQL read-only session);
                             none registered: UNKNOWN (production cannot be told from a copy)
    validator-pin            the running validator's bytes hash to the pin in the ledger
    ledger                   the ledger verifies from its bytes, extends the newest trusted
                             signed checkpoint, and folds cleanly through its head
    production-hold          HOLD is in force for the change, or lifted by a production grant
                             still inside its window
    ci-scope                 the policy declares the CI/deploy scope ([ci]); absent: UNKNOWN
    policy-in-force          the policy file is the ledger's policy in force; a file that
                             differs is UNKNOWN (it changes nothing until adopted: `rollproof
                             policy adopt`), and opens a blocker like every UNKNOWN
    impact-limits            production lanes, when a limit applies: the measured impact of the
                             evidence the lane stands on is within every limit (the policy in
                             force's `[impact]` and the change's own); over one, or not
                             measured, it FAILs with the figure and the limit, and the preflight
                             holds (exit 3), not fails: the change did what it said, it is too
                             heavy for production as it stands

Invariants, each against a named failure:

* state comes from the ledger, verified from its bytes (against the signed checkpoint when one
  exists), never from configuration alone: a pin or a HOLD cannot be faked by editing a file;
* the results are appended as one `preflight.recorded` event **by a builder, in the append
  transaction**, from the state folded there; the event names the position it verified and the
  fold refuses any other, so a recorded preflight read exactly the ledger it sits on;
* UNKNOWN is never PASS: every UNKNOWN check opens (or classifies again) a blocker in the same
  transaction (`record_unknown`); it lets the run go on only where the lane's `allow_unknown`
  names the check, and nothing is triggered by it;
* a ledger that does not verify cannot hold a record of anything: the preflight then FAILs and
  records nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from rollproof.core.errors import ExitCode, RollproofError
from rollproof.core.model import Verdict
from rollproof.core.policy import Check, Governance, Lane, Policy
from rollproof.core.redact import redact_dsn
from rollproof.governance.events import NewEvent
from rollproof.governance.in_force import file_matches, policy_in_force
from rollproof.governance.in_force import (  # re-exported: cli/ledger.py asks for it here
    trusted_checkpoint as trusted_checkpoint,
)
from rollproof.governance.lanes import hold_status, impact_need
from rollproof.governance.ledger import Checkpoint
from rollproof.governance.records import CheckRecord, LedgerState
from rollproof.governance.rules_lanes import record_preflight
from rollproof.governance.rules_tickets import record_unknown
from rollproof.governance.state import fold
from rollproof.governance.store import LedgerStore, open_ledger

if TYPE_CHECKING:
    from rollproof.core.change import Change


HOLDING_CHECKS = frozenset({Check.IMPACT_LIMITS})
"""Checks whose FAIL holds the run (exit 3) rather than failing it (exit 1)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: Check
    verdict: Verdict
    detail: str


@dataclass(frozen=True, slots=True)
class Preflight:
    change_id: str
    lane: Lane
    source: str
    checks: tuple[CheckResult, ...]
    recorded_at: int | None
    """The seq of the `preflight.recorded` event, or None when the ledger could not take it."""
    through: int

    @property
    def overall(self) -> Verdict:
        verdicts = {c.verdict for c in self.checks}
        if Verdict.FAIL in verdicts:
            return Verdict.FAIL
        if Verdict.UNKNOWN in verdicts:
            return Verdict.UNKNOWN
        return Verdict.PASS

    @property
    def disallowed_unknowns(self) -> tuple[CheckResult, ...]:
        return tuple(
            c
            for c in self.checks
            if c.verdict is Verdict.UNKNOWN and c.check not in self.lane.allow_unknown
        )

    @property
    def may_proceed(self) -> bool:
        return self.overall is not Verdict.FAIL and not self.disallowed_unknowns

    @property
    def exit_code(self) -> ExitCode:
        if self.overall is Verdict.FAIL:
            failed = {c.check for c in self.checks if c.verdict is Verdict.FAIL}
            return ExitCode.HELD if failed <= HOLDING_CHECKS else ExitCode.CHECK_FAILED
        if self.disallowed_unknowns:
            return ExitCode.HELD
        return ExitCode.OK


def _scoping(change: Change, source: str) -> CheckResult:
    from rollproof.rehearse.flow import dialect_for
    from rollproof.surfaces.scope import ScopingStatus, check_scoping

    scoping = check_scoping(change, dialect=dialect_for(source))
    if scoping.status is ScopingStatus.READY:
        return CheckResult(
            Check.SURFACE_SCOPING, Verdict.PASS, "READY: every object the scripts touch is declared"
        )
    verdict = Verdict.FAIL if scoping.status is ScopingStatus.NOT_READY else Verdict.UNKNOWN
    return CheckResult(
        Check.SURFACE_SCOPING, verdict, f"{scoping.status}: " + "; ".join(scoping.problems())
    )


def _production_guard(policy: Policy, source: str) -> CheckResult:
    sources = policy.production_sources
    if not sources:
        return CheckResult(
            Check.NO_PRODUCTION_EXECUTION,
            Verdict.UNKNOWN,
            "the policy registers no production source: production cannot be told from a copy",
        )
    unguarded = [
        redact_dsn(s)
        for s in sources
        if "://" in s and not s.startswith(("sqlite:", "postgresql://", "postgres://"))
    ]
    if unguarded:
        return CheckResult(
            Check.NO_PRODUCTION_EXECUTION,
            Verdict.FAIL,
            "no engine opens these registered production sources read-only: "
            + ", ".join(unguarded),
        )
    shown = redact_dsn(source)
    mark = " (the source is one of them: opened read-only only)" if source in sources else ""
    return CheckResult(
        Check.NO_PRODUCTION_EXECUTION,
        Verdict.PASS,
        f"APPLIED to {len(sources)} registered production source(s): SQLite opened mode=ro "
        f"and hashed before and after, PostgreSQL in read-only sessions{mark}; "
        f"changes run only on the clone of {shown}",
    )


def _validator_pin(state: LedgerState) -> CheckResult:
    from rollproof.verify.pin import validator_sha256

    running = validator_sha256()
    if state.validator_pin is None:
        return CheckResult(
            Check.VALIDATOR_PIN, Verdict.UNKNOWN, "the ledger records no validator pin"
        )
    if state.validator_pin != running:
        return CheckResult(
            Check.VALIDATOR_PIN,
            Verdict.FAIL,
            f"the running validator is {running}, the ledger pins {state.validator_pin}",
        )
    return CheckResult(
        Check.VALIDATOR_PIN, Verdict.PASS, f"byte-exact: {running} as pinned in the ledger"
    )


def _ledger(state: LedgerState, checkpoint: Checkpoint | None) -> CheckResult:
    anchored = (
        f"; extends the signed checkpoint at {checkpoint.size}"
        if checkpoint is not None
        else "; no signed ledger checkpoint yet (rollproof ledger checkpoint)"
    )
    return CheckResult(
        Check.LEDGER,
        Verdict.PASS,
        f"verified from its bytes and folded through {state.through} (head {state.head}){anchored}",
    )


def _hold(gov: Governance, state: LedgerState, change_id: str, now: datetime) -> CheckResult:
    hold = hold_status(gov, state, change_id, now)
    return CheckResult(Check.PRODUCTION_HOLD, Verdict.PASS, hold.reason)


def _ci(gov: Governance) -> CheckResult:
    if gov.ci_triggers is None:
        return CheckResult(
            Check.CI_SCOPE,
            Verdict.UNKNOWN,
            "the policy has no [ci] table: the CI/deploy scope is not designed; "
            "no CI or deploy is triggered",
        )
    return CheckResult(
        Check.CI_SCOPE,
        Verdict.PASS,
        f"declared: {len(gov.ci_triggers)} CI/deploy trigger file(s), forbidden to rehearsals; "
        "rollproof triggers none",
    )


def _impact(gov: Governance, state: LedgerState, change_id: str, lane: Lane) -> CheckResult | None:
    need = impact_need(gov, state, change_id, lane)
    if need is None:
        return None
    return CheckResult(Check.IMPACT_LIMITS, Verdict.PASS if need.met else Verdict.FAIL, need.text)


def _policy_in_force(file_policy: Policy, state: LedgerState) -> CheckResult:
    same, detail = file_matches(file_policy, state)
    return CheckResult(Check.POLICY_IN_FORCE, Verdict.PASS if same else Verdict.UNKNOWN, detail)


def evaluate(
    policy: Policy,
    gov: Governance,
    state: LedgerState,
    change: Change,
    source: str,
    checkpoint: Checkpoint | None,
    now: datetime,
    file_policy: Policy | None = None,
    lane: Lane | None = None,
) -> tuple[CheckResult, ...]:
    """Every check against a verified, folded state (pure but for reading the validator).

    `policy` and `gov` are the policy in force (the ledger's); `file_policy`, when given, is the
    policy file, compared with it by the `policy-in-force` check; `lane`, when given, is the
    lane the run is for (a production lane adds `impact-limits` when a limit applies)."""
    checks: tuple[CheckResult, ...] = (
        _scoping(change, source),
        _production_guard(policy, source),
        _validator_pin(state),
        _ledger(state, checkpoint),
        _hold(gov, state, change.id, now),
        _ci(gov),
    )
    if file_policy is not None:
        checks += (_policy_in_force(file_policy, state),)
    impact = None if lane is None else _impact(gov, state, change.id, lane)
    if impact is not None:
        checks += (impact,)
    return checks


def _events(
    state: LedgerState,
    change_id: str,
    lane: Lane,
    source: str,
    checks: Sequence[CheckResult],
) -> list[NewEvent]:
    records = [CheckRecord(str(c.check), c.verdict, c.detail) for c in checks]
    overall = Preflight(change_id, lane, source, tuple(checks), None, state.through).overall
    events = [
        record_preflight(
            state,
            change_id=change_id,
            lane=lane.name,
            source=source,
            checks=records,
            overall=overall,
        )
    ]
    for c in checks:
        if c.verdict is Verdict.UNKNOWN:
            events += record_unknown(state, change_id=change_id, check=c.check, reason=c.detail)
    return events


def run_preflight(
    policy: Policy,
    change: Change,
    source: str,
    *,
    lane: str | None = None,
    now: datetime,
    store: LedgerStore | None = None,
) -> Preflight:
    """Run every check, record the results (and a blocker per UNKNOWN) in the ledger.

    `policy` is the policy file: it names the ledger, and the `policy-in-force` check compares it
    with the ledger's policy; every other check reads the policy in force."""
    file_gov = policy.governed()
    ledger = store or open_ledger(file_gov.ledger)
    shown = redact_dsn(source)
    try:
        checkpoint = trusted_checkpoint(file_gov)
        verified = ledger.read_verified(trusted_checkpoint=checkpoint)
        gov = policy_in_force(policy, fold(verified.events)).governed()
    except RollproofError as e:
        chosen = next((x for x in file_gov.lanes if x.name == lane), file_gov.first)
        failed = CheckResult(Check.LEDGER, Verdict.FAIL, str(e))
        return Preflight(change.id, chosen, shown, (failed,), None, 0)
    chosen = gov.lane(lane) if lane is not None else gov.first

    results: list[tuple[CheckResult, ...]] = []

    def build(state: LedgerState) -> list[NewEvent]:
        # The state folded inside the append transaction: what the checks read is what the
        # event says it read, under the policy in force there.
        current = policy_in_force(policy, state)
        checks = evaluate(
            current, current.governed(), state, change, source, checkpoint, now, policy, chosen
        )
        results.append(checks)
        return _events(state, change.id, chosen, shown, checks)

    (first, *_rest) = ledger.append_events(build, now=now)
    checks = results[-1]
    return Preflight(change.id, chosen, shown, checks, first.seq, first.seq - 1)
