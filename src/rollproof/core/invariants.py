"""Judge a leg from its recorded fingerprints: one pure function for rehearsal and validator alike.

`judge_leg` takes the fingerprints recorded at a leg's points and returns the verdict the
invariants give. The rehearsal uses it to decide; the evidence validator uses it to recompute
and reject a report whose recorded verdict disagrees. Keeping one implementation is what stops
a "PASS over differing fingerprints" from validating.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rollproof.core.fingerprint import Difference, Fingerprint, compare
from rollproof.core.model import LEG_POINTS, Invariant, LegName, Point, Verdict, leg_invariants


@dataclass(frozen=True, slots=True)
class InvariantResult:
    invariant: Invariant
    holds: bool
    differences: tuple[Difference, ...]
    tolerated: tuple[Difference, ...]


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str | None
    results: tuple[InvariantResult, ...]


def judge_leg(
    leg: LegName,
    points: Mapping[Point, Fingerprint],
    *,
    no_mutation: bool,
    strict_sequences: bool,
) -> Judgement:
    """The verdict a leg's invariants give over a complete set of fingerprints."""
    missing = [p for p in LEG_POINTS[leg] if p not in points]
    if missing:
        raise ValueError(f"leg {leg} is missing fingerprints at {', '.join(missing)}")
    results = []
    for inv in leg_invariants(leg, no_mutation=no_mutation):
        cmp = compare(points[inv.right], points[inv.left], strict_sequences=strict_sequences)
        holds = cmp.equal if inv.op == "==" else not cmp.equal
        results.append(InvariantResult(inv, holds, cmp.differences, cmp.tolerated))
    failed = [r for r in results if not r.holds]
    if not failed:
        return Judgement(Verdict.PASS, None, tuple(results))
    first = failed[0]
    if first.invariant.op == "!=":
        reason = (
            "apply changed nothing, so this leg proves nothing about rollback "
            "(declare no_mutation = true if the change is meant to change nothing)"
        )
    elif first.invariant.left is Point.AFTER_APPLY:
        reason = "the change is declared no_mutation but apply changed the database"
    else:
        reason = f"{first.invariant} does not hold: " + "; ".join(
            d.summary for d in first.differences
        )
    return Judgement(Verdict.FAIL, reason, tuple(results))
