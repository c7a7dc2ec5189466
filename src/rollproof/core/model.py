"""Names every other module shares: verdicts, legs, fingerprint points and the leg invariants.

Status tokens are defined here once, as enums, and compared as enums everywhere else; a
misspelt status cannot silently compare unequal. The invariant table is data, so the
rehearsal that computes a verdict and the validator that recomputes it read the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rollproof.core.errors import ExitCode


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    NOT_APPLICABLE = "NOT_APPLICABLE"
    UNKNOWN = "UNKNOWN"


class LegName(StrEnum):
    READ_ONLY = "read-only"
    TRANSACTION = "transaction"
    REVERT = "revert"
    RESTORE = "restore"
    REAPPLY = "reapply"


DEFAULT_LEGS: tuple[LegName, ...] = (
    LegName.READ_ONLY,
    LegName.TRANSACTION,
    LegName.REVERT,
    LegName.RESTORE,
)
ROLLBACK_LEGS: frozenset[LegName] = frozenset(
    {LegName.TRANSACTION, LegName.REVERT, LegName.RESTORE}
)


class IsolationVerdict(StrEnum):
    PROVEN = "PROVEN_ISOLATED_NOT_PRODUCTION"
    NOT_PROVEN = "NOT_PROVEN"


class Point(StrEnum):
    """A moment in a leg at which the clone is fingerprinted."""

    ENTRY = "entry"
    EXIT = "exit"
    BEFORE = "before"
    AFTER_APPLY = "after_apply"
    AFTER_ROLLBACK = "after_rollback"
    AFTER_REVERT = "after_revert"
    AFTER_RESTORE = "after_restore"
    AFTER_REAPPLY = "after_reapply"


LEG_POINTS: dict[LegName, tuple[Point, ...]] = {
    LegName.READ_ONLY: (Point.ENTRY, Point.EXIT),
    LegName.TRANSACTION: (Point.BEFORE, Point.AFTER_APPLY, Point.AFTER_ROLLBACK),
    LegName.REVERT: (Point.BEFORE, Point.AFTER_APPLY, Point.AFTER_REVERT),
    LegName.RESTORE: (Point.BEFORE, Point.AFTER_APPLY, Point.AFTER_RESTORE),
    LegName.REAPPLY: (Point.BEFORE, Point.AFTER_APPLY, Point.AFTER_REVERT, Point.AFTER_REAPPLY),
}


@dataclass(frozen=True, slots=True)
class Invariant:
    """`left op right` over two fingerprint points of one leg; op is "==" or "!="."""

    left: Point
    op: str
    right: Point

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


def leg_invariants(leg: LegName, *, no_mutation: bool) -> tuple[Invariant, ...]:
    """The invariants a leg must satisfy to PASS.

    `after_apply != before` is the executor-integrity invariant: an apply that changed nothing
    proves nothing about rollback, so a passing rollback over it would be fabricated evidence.
    A change declared `no_mutation` must instead leave the database as it was.
    """
    mutation = Invariant(Point.AFTER_APPLY, "==" if no_mutation else "!=", Point.BEFORE)
    if leg is LegName.READ_ONLY:
        return (Invariant(Point.EXIT, "==", Point.ENTRY),)
    if leg is LegName.TRANSACTION:
        return (mutation, Invariant(Point.AFTER_ROLLBACK, "==", Point.BEFORE))
    if leg is LegName.REVERT:
        return (mutation, Invariant(Point.AFTER_REVERT, "==", Point.BEFORE))
    if leg is LegName.RESTORE:
        return (mutation, Invariant(Point.AFTER_RESTORE, "==", Point.BEFORE))
    return (mutation, Invariant(Point.AFTER_REAPPLY, "==", Point.AFTER_APPLY))


def overall_verdict(verdicts: list[Verdict], legs: list[LegName]) -> Verdict:
    """Fold leg verdicts into the rehearsal's overall verdict.

    FAIL if any leg failed; UNKNOWN if any leg is unknown (unknown is never pass); PASS only
    when every other leg passed or was honestly not applicable and at least one rollback path
    (transaction, revert, restore) actually passed.
    """
    if not verdicts:
        return Verdict.UNKNOWN
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if Verdict.UNKNOWN in verdicts:
        return Verdict.UNKNOWN
    proven = [leg for leg, v in zip(legs, verdicts, strict=True) if v is Verdict.PASS]
    if not any(leg in ROLLBACK_LEGS for leg in proven):
        return Verdict.UNKNOWN
    return Verdict.PASS


def combine_verdicts(legs: Verdict, surfaces: Verdict) -> Verdict:
    """The rehearsal's overall verdict: the legs' verdict, failed by any surface violation.

    A change that came back perfectly but wrote an undeclared table, or touched a forbidden
    surface, has not passed: staying inside its lane is part of what is proven.
    """
    if surfaces is Verdict.FAIL:
        return Verdict.FAIL
    if surfaces is not Verdict.PASS and legs is Verdict.PASS:
        return Verdict.UNKNOWN
    return legs


def rehearsal_exit_code(
    isolation: IsolationVerdict, overall: Verdict, *, denied: bool = False
) -> ExitCode:
    """The exit code of `rollproof rehearse` for these verdicts (the validator checks it too).

    `denied`: the engine denied an access at run time (an undeclared surface): the change is
    held (3) until it is declared, whatever the legs say, as when the static check finds it.
    """
    if isolation is not IsolationVerdict.PROVEN or denied:
        return ExitCode.HELD
    if overall is Verdict.PASS:
        return ExitCode.OK
    if overall is Verdict.FAIL:
        return ExitCode.CHECK_FAILED
    return ExitCode.HELD  # UNKNOWN is never a pass


def surfaces_verdict(*, undeclared_changed: bool, forbidden_touched: bool, denied: bool) -> Verdict:
    """FAIL when the change stepped outside its lane, as the bytes or the engine saw it."""
    if undeclared_changed or forbidden_touched or denied:
        return Verdict.FAIL
    return Verdict.PASS


def undeclared_denial(decision: str, reason: str) -> bool:
    """Whether a recorded enforcement event is an access denied because it was not declared
    (the change is held, exit 3, until it is declared), as opposed to an access to a forbidden
    object (a violation: the rehearsal fails, exit 1). The rehearsal and the validator (over
    report.json's `surfaces.enforcement`) read it the same way."""
    return decision == "denied" and " of undeclared object " in reason
