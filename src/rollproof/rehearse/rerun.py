"""Re-run a packet's rehearsal from its own change/ copy and compare every fingerprint.

    rerun_packet(packet) -> RerunResult       (what `rollproof rerun` and RERUN.sh run)

1. The packet is validated first (`validate_packet`): re-running a change copy that does not
   match its report would prove nothing about the report.
2. change/ is staged in a private temporary directory named after the change's id (an id left
   out of change.toml defaults to the directory's name) and loaded; its content id must be the
   recorded one.
3. The rehearsal runs again with the recorded legs against the recorded source (or `source`),
   with the recorded `--allow-undeclared`, and the policy file recorded in the report when it
   still exists (else the empty policy).
4. Every recorded fingerprint is compared with the new one, point by point: the source
   fingerprint, then each leg's points in the leg's order (and each leg's verdict).

Outcome:
* MATCH: every point (and verdict) is the same.
* SOURCE_DRIFTED: the source fingerprint differs (it is every leg's `before`, so the source
  database changed since the packet was written, and every later difference follows from it).
* NON_DETERMINISTIC: the source is the same but other points differ: the change does not
  produce the same content twice (CURRENT_TIMESTAMP, random(), an AUTOINCREMENT it does not
  control). When only after-apply states differ (`after_apply`, `after_reapply`, and the
  read-only leg's `entry`/`exit`, taken after apply) the rollback evidence still stands.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from rollproof.core.change import load_change
from rollproof.core.errors import CheckFailedError, ExitCode
from rollproof.core.fingerprint import Fingerprint, compare, fingerprint_from_json
from rollproof.core.model import LEG_POINTS, LegName, Point
from rollproof.core.policy import EMPTY_POLICY, Policy, load_policy
from rollproof.core.redact import redact_dsn
from rollproof.engines.base import Progress
from rollproof.rehearse.flow import Clock, rehearse, utc_now
from rollproof.verify.layout import CHANGE_DIR
from rollproof.verify.reader import validate_packet

AFTER_APPLY_POINTS = frozenset({Point.AFTER_APPLY, Point.AFTER_REAPPLY, Point.ENTRY, Point.EXIT})


class RerunOutcome(StrEnum):
    MATCH = "MATCH"
    SOURCE_DRIFTED = "SOURCE_DRIFTED"
    NON_DETERMINISTIC = "NON_DETERMINISTIC"


class RerunChangeError(CheckFailedError):
    """The packet's change/ copy does not load as the recorded change."""


@dataclass(frozen=True, slots=True)
class PointMismatch:
    """One recorded point (`source`, `<leg>.<point>` or `<leg>.verdict`) that came out
    differently; `None` when one side has no such point."""

    where: str
    recorded: str | None
    now: str | None
    components: tuple[str, ...] = ()
    """What differs between the recorded and the new fingerprint (`table orders`, `schema
    index:i`, `header user_version`, `sequence audit_log`), when both are at hand."""

    def __str__(self) -> str:
        line = f"{self.where}: recorded {self.recorded or 'nothing'}, now {self.now or 'nothing'}"
        return line + (f" ({', '.join(self.components)} differ)" if self.components else "")


@dataclass(frozen=True, slots=True)
class RerunResult:
    packet: Path
    change_id: str
    source: str
    compared: int
    mismatches: tuple[PointMismatch, ...]

    @property
    def outcome(self) -> RerunOutcome:
        if not self.mismatches:
            return RerunOutcome.MATCH
        if any(m.where == "source" or m.where.endswith(".before") for m in self.mismatches):
            return RerunOutcome.SOURCE_DRIFTED
        return RerunOutcome.NON_DETERMINISTIC

    @property
    def only_after_apply(self) -> bool:
        """True when every mismatch is at an after-apply point (the rollbacks still agree)."""
        return all(
            m.where.rpartition(".")[2] in {str(p) for p in AFTER_APPLY_POINTS}
            for m in self.mismatches
        )

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.outcome is RerunOutcome.MATCH else ExitCode.CHECK_FAILED

    def explanation(self) -> str:
        if self.outcome is RerunOutcome.MATCH:
            return f"every recorded fingerprint ({self.compared} points) was reproduced"
        if self.outcome is RerunOutcome.SOURCE_DRIFTED:
            return (
                "source drifted: its fingerprint (every leg's `before`) differs from the "
                "recorded one; the source database changed since the packet was written"
            )
        if self.only_after_apply:
            return (
                "non-deterministic change: the source is unchanged and only after-apply "
                "points differ (e.g. CURRENT_TIMESTAMP, random()); the rollbacks agree"
                + self._where()
            )
        return (
            "non-deterministic change: the source is unchanged but the change's results "
            "differ, including after a rollback" + self._where()
        )

    def _where(self) -> str:
        """`; differing: table items (columns stamp), ...` from every mismatched point."""
        names = list(dict.fromkeys(c for m in self.mismatches for c in m.components))
        return f"; differing: {', '.join(names)}" if names else ""


def differing_components(old: Fingerprint, new: Fingerprint) -> tuple[str, ...]:
    """The components two fingerprints differ in, named for a person: `table items`,
    `schema index:items_name`, `header user_version`, `sequence orders` (an advance too)."""
    cmp = compare(old, new, strict_sequences=True)
    return tuple(d.component.replace(":", " ", 1) for d in cmp.differences)


def _policy(recorded: dict[str, object]) -> Policy:
    path = recorded.get("path")
    if isinstance(path, str) and Path(path).is_file():
        return load_policy(Path(path))
    return EMPTY_POLICY


def rerun_packet(
    packet: str | Path,
    *,
    source: str | None = None,
    policy: Policy | None = None,
    scratch: str | None = None,
    workdir: Path | None = None,
    progress: Progress | None = None,
    clock: Clock = utc_now,
) -> RerunResult:
    """Validate `packet`, re-run its rehearsal from change/, and compare every fingerprint."""
    verified = validate_packet(packet)
    report = verified.report
    change_id = str(report["change"]["id"])
    prefix = CHANGE_DIR + "/"
    with tempfile.TemporaryDirectory(prefix="rollproof-rerun-") as tmp:
        staged = Path(tmp) / change_id
        for path, data in verified.files.items():
            if path.startswith(prefix):
                target = staged / path[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        change = load_change(staged)
        if change.content_id != verified.content_id:
            raise RerunChangeError(
                f"the packet's change/ copy loads as {change.content_id}, "
                f"not the recorded {verified.content_id}"
            )
        dsn = source or str(report["source"]["dsn"])
        result = rehearse(
            change,
            dsn,
            legs=tuple(LegName(leg["name"]) for leg in report["legs"]),
            workdir=workdir,
            progress=progress,
            clock=clock,
            policy=policy if policy is not None else _policy(report["surfaces"]["policy"]),
            allow_undeclared=bool(report["surfaces"]["allow_undeclared"]),
            scratch=scratch if scratch is not None else report["source"].get("scratch"),
        )

    recorded_fps: dict[str, Fingerprint] = {}
    for path, data in verified.files.items():
        if path.startswith("fingerprints/") and path.endswith(".json"):
            try:
                fp = fingerprint_from_json(json.loads(data))
            except (ValueError, KeyError, TypeError):
                continue
            recorded_fps[fp.digest] = fp

    def components(rec: str | None, now: Fingerprint | None) -> tuple[str, ...]:
        old = None if rec is None else recorded_fps.get(rec)
        if old is None or now is None:
            return ()
        return differing_components(old, now)

    mismatches: list[PointMismatch] = []
    recorded_source = str(report["source"]["fingerprint"])
    compared = 1
    if result.source_fingerprint.digest != recorded_source:
        mismatches.append(
            PointMismatch(
                "source",
                recorded_source,
                result.source_fingerprint.digest,
                components(recorded_source, result.source_fingerprint),
            )
        )
    now_legs = {leg.name: leg for leg in result.legs}
    for doc in report["legs"]:
        name = LegName(doc["name"])
        now = now_legs.get(name)
        now_fps = {} if now is None else {str(p): fp for p, fp in now.fingerprints.items()}
        for point in LEG_POINTS[name]:
            rec = doc["fingerprints"].get(str(point))
            now_fp = now_fps.get(str(point))
            cur = None if now_fp is None else now_fp.digest
            if rec is None and cur is None:
                continue
            compared += 1
            if rec != cur:
                mismatches.append(
                    PointMismatch(f"{name}.{point}", rec, cur, components(rec, now_fp))
                )
        now_verdict = None if now is None else str(now.verdict)
        if doc["verdict"] != now_verdict:
            mismatches.append(PointMismatch(f"{name}.verdict", doc["verdict"], now_verdict))
    return RerunResult(Path(packet), change_id, redact_dsn(dsn), compared, tuple(mismatches))
