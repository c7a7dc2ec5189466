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

Naming what differs. A fingerprint holds one digest per table, schema object, sequence and
header field, so the recorded and the new fingerprints name those (`schema index:i`,
`sequence orders`) but not a table's columns, and the recorded run's clone is long gone. To
name columns, a non-deterministic rerun applies the change twice more on clones of the source
(under the same surface guard as a rehearsal), the first copy set aside, and has the engine
compare the two row by row through the table's key (`explain_set_aside`, the comparison a
failing leg's explanation uses): `table orders column created_at differs between runs (3
rows)`. The second apply waits for the wall clock's next second, so a value with one-second
resolution (SQLite's CURRENT_TIMESTAMP) differs too; a value that changes more slowly (a date)
agrees between the two, and its table is named without columns, saying so. This costs two
applies only when a rerun already failed; the alternative, per-column digests recorded in
every packet, would cost every rehearsal a second read of every table it wrote, on the path
that passes, for a diagnosis of the path that fails.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rollproof.core.change import Change, load_change
from rollproof.core.dumps import dump_scheme, parse_dump_dsn
from rollproof.core.errors import CheckFailedError, ExitCode, RollproofError
from rollproof.core.fingerprint import Difference, Fingerprint, compare, fingerprint_from_json
from rollproof.core.guard import SurfaceGuard
from rollproof.core.model import LEG_POINTS, LegName, Point
from rollproof.core.policy import EMPTY_POLICY, Policy, load_policy
from rollproof.core.redact import redact_dsn
from rollproof.engines import read_catalog
from rollproof.engines.base import Progress
from rollproof.rehearse.flow import Clock, dialect_for, open_session, rehearse, utc_now
from rollproof.surfaces.scope import check_scoping
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
    differences: tuple[Difference, ...] = field(default=(), compare=False, repr=False)
    """The same, as the fingerprint comparison gives them."""

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
    between_runs: tuple[str, ...] = ()
    """A non-deterministic change: what differs between runs, one phrase per table column,
    table, schema object, sequence or header field (`table orders column created_at differs
    between runs (3 rows)`)."""

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
        what = "; ".join(self.between_runs) or "its results differ between runs"
        if self.only_after_apply:
            return (
                f"non-deterministic change: {what}; the source is unchanged and only "
                "after-apply points differ (e.g. CURRENT_TIMESTAMP, random()): the rollbacks agree"
            )
        return (
            f"non-deterministic change: {what}; the source is unchanged but the results "
            "differ after a rollback too"
        )


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _table_phrases(table: str, probed: Difference | None) -> list[str]:
    """What two applies compared row by row say about `table` (counts only, never values)."""
    head = f"table {table}"
    if probed is None:
        return [f"{head} differs between runs"]
    detail = probed.detail
    if "explain_error" in detail:
        return [f"{head} differs between runs (its rows could not be compared)"]
    columns: Mapping[str, int] = detail.get("columns_changed", {})
    out = [
        f"{head} column {c} differs between runs ({_plural(n, 'row')})" for c, n in columns.items()
    ]
    for only, unit in (("rows", "row"), ("distinct_rows", "distinct row")):
        first, second = detail.get(f"{only}_missing", 0), detail.get(f"{only}_added", 0)
        if first or second:
            out.append(
                f"{head} rows differ between runs ({_plural(first, unit)} only in the first, "
                f"{second:,} only in the second)"
            )
    if out:
        return out
    if "rows_changed" not in detail and "distinct_rows_missing" not in detail:
        return [f"{head} differs between runs (no primary key to match rows: no column named)"]
    return [f"{head} differs between runs (two applies now agreed: no column named)"]


def between_runs(
    differences: Sequence[Difference], probed: Mapping[str, Difference] | None
) -> tuple[str, ...]:
    """One phrase per component that differs between the recorded run and this one, a
    changed table's with the columns `probed` (two applies compared) names."""
    out: list[str] = []
    for d in differences:
        kind, _, name = d.component.partition(":")
        if kind == "table" and d.kind == "changed":
            out += _table_phrases(name, None if probed is None else probed.get(name))
        elif kind == "schema" and name:
            out.append(f"schema {name} differs between runs ({d.kind})")
        else:
            out.append(f"{kind} {name}".strip() + f" differs between runs ({d.kind})")
    return tuple(dict.fromkeys(out))


@runtime_checkable
class SetsAside(Protocol):
    """An engine session that can keep a copy of its clone and compare the clone with it."""

    def set_aside(self) -> None: ...

    def explain_set_aside(self, differences: Sequence[Difference]) -> list[Difference]: ...


def _next_second(now: Callable[[], float] = time.time) -> None:
    """Wait for the wall clock's next whole second."""
    t = now()
    time.sleep(max(0.0, math.floor(t) + 1 - t))


def compare_two_applies(
    change: Change,
    dsn: str,
    tables: Sequence[str],
    *,
    policy: Policy,
    scratch: str | None,
    workdir: Path | None,
    progress: Progress | None = None,
) -> dict[str, Difference] | None:
    """Apply `change` twice on fresh clones of `dsn` and compare `tables` between the two
    applies, row by row: table -> the engine's explanation. None when it cannot be told (an
    engine that cannot set a clone aside, an apply that fails, a database error)."""
    say = progress or (lambda _msg: None)
    try:
        scoping = check_scoping(change, dialect=dialect_for(dsn), catalog=read_catalog(dsn))
        guard = SurfaceGuard(  # the rehearsal's own guard (flow.rehearse)
            reads=change.reads,
            writes=change.writes,
            forbidden=policy.forbidden_objects,
            read_mode=policy.undeclared_reads,
            forbidden_env=policy.forbidden_env,
            implicit=scoping.catalog_implicit,
        )
        session = open_session(dsn, workdir=workdir, progress=say, guard=guard, scratch=scratch)
        try:
            if not isinstance(session, SetsAside):
                return None
            for turn in (1, 2):
                say(f"naming what differs: apply {turn} of 2")
                session.fresh_clone()
                if not session.run_script("apply", change.apply, change.connection).ok:
                    return None
                if turn == 1:
                    session.set_aside()
                    _next_second()
            asked = [Difference(f"table:{t}", "changed", f"table {t}") for t in tables]
            return {d.component.partition(":")[2]: d for d in session.explain_set_aside(asked)}
        finally:
            session.close(keep=False)
    except RollproofError:
        return None


def _policy(recorded: dict[str, object]) -> Policy:
    path = recorded.get("path")
    if isinstance(path, str) and Path(path).is_file():
        return load_policy(Path(path))
    return EMPTY_POLICY


def _source_for(recorded: Mapping[str, Any], source: str | None) -> str:
    """The recorded source, or `source`; a dump given without a digest is held to the
    recorded dump's sha256 (a rehearsal refuses one that hashes otherwise)."""
    if source is None:
        return str(recorded["dsn"])
    dump = recorded.get("dump")
    if isinstance(dump, Mapping) and dump_scheme(source) is not None:
        parsed = parse_dump_dsn(source)
        if parsed.sha256 is None:
            return parsed.dsn(str(dump["sha256"]))
    return source


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
    from rollproof.engines.workspace import owned_temp_dir

    with owned_temp_dir("rollproof-rerun-") as tmp:
        staged = tmp / change_id
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
        dsn = _source_for(report["source"], source)
        run_policy = policy if policy is not None else _policy(report["surfaces"]["policy"])
        run_scratch = scratch if scratch is not None else report["source"].get("scratch")
        result = rehearse(
            change,
            dsn,
            legs=tuple(LegName(leg["name"]) for leg in report["legs"]),
            workdir=workdir,
            progress=progress,
            clock=clock,
            policy=run_policy,
            allow_undeclared=bool(report["surfaces"]["allow_undeclared"]),
            scratch=run_scratch,
        )

    recorded_fps: dict[str, Fingerprint] = {}
    for path, data in verified.files.items():
        if path.startswith("fingerprints/") and path.endswith(".json"):
            try:
                fp = fingerprint_from_json(json.loads(data))
            except (ValueError, KeyError, TypeError):
                continue
            recorded_fps[fp.digest] = fp

    def differing(rec: str | None, now: Fingerprint | None) -> tuple[Difference, ...]:
        old = None if rec is None else recorded_fps.get(rec)
        if old is None or now is None:
            return ()
        return tuple(compare(old, now, strict_sequences=True).differences)

    def mismatch(where: str, rec: str | None, now: Fingerprint | None) -> PointMismatch:
        found = differing(rec, now)
        names = tuple(d.component.replace(":", " ", 1) for d in found)
        return PointMismatch(where, rec, None if now is None else now.digest, names, found)

    mismatches: list[PointMismatch] = []
    recorded_source = str(report["source"]["fingerprint"])
    compared = 1
    if result.source_fingerprint.digest != recorded_source:
        mismatches.append(mismatch("source", recorded_source, result.source_fingerprint))
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
                mismatches.append(mismatch(f"{name}.{point}", rec, now_fp))
        now_verdict = None if now is None else str(now.verdict)
        if doc["verdict"] != now_verdict:
            mismatches.append(PointMismatch(f"{name}.verdict", doc["verdict"], now_verdict))
    rerun = RerunResult(Path(packet), change_id, redact_dsn(dsn), compared, tuple(mismatches))
    if rerun.outcome is not RerunOutcome.NON_DETERMINISTIC:
        return rerun
    differences = list({d.component: d for m in mismatches for d in m.differences}.values())
    tables = [
        d.component.partition(":")[2]
        for d in differences
        if d.component.startswith("table:") and d.kind == "changed"
    ]
    probed = None
    if tables:
        probed = compare_two_applies(
            change,
            dsn,
            tables,
            policy=run_policy,
            scratch=run_scratch,
            workdir=workdir,
            progress=progress,
        )
    return replace(rerun, between_runs=between_runs(differences, probed))
