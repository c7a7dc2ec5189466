"""Text views of a rehearsal, shared by `rehearse` and `demo`: lines for `console.render`/`show`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from rollproof.cli.console import VERDICT_STYLE, markup
from rollproof.core.model import Verdict
from rollproof.verify.report_md import difference_lines

if TYPE_CHECKING:
    from rollproof.governance.flow import GovernedRehearsal
    from rollproof.rehearse.flow import RehearsalResult


def rehearsal_lines(result: RehearsalResult, out_dir: Path) -> Iterator[RenderableType]:
    """Each leg's verdict, then tolerated differences, surfaces, isolation and the overall."""
    table = Table(title=f"{result.change.id} — rollback rehearsal", title_justify="left")
    table.add_column("leg")
    table.add_column("verdict")
    table.add_column("reason", overflow="fold")
    for leg in result.legs:
        style = VERDICT_STYLE[str(leg.verdict)]
        # Reasons quote the change's SQL: shown as text, never interpreted as markup.
        table.add_row(str(leg.name), Text(str(leg.verdict), style=style), Text(leg.reason or ""))
    yield table
    for leg in result.legs:
        if leg.verdict is Verdict.FAIL and leg.differences:
            yield f"  {leg.name}: what did not come back"
            for d in leg.differences:
                # The same lines report.md has: summary, attributes, example rows (SQL literals,
                # secrets withheld), how many more.
                yield from (f"  {line}" for line in difference_lines(d.to_json()))
    for leg in result.legs:
        for d in leg.tolerated:
            yield f"  tolerated in {leg.name}: {d.summary}"
    surfaces = result.surfaces
    for role, risk in surfaces.scoping.risks:
        yield f"  risk ({role} statement {risk.statement}): {risk.message}; {risk.proven_by}"
    for event in surfaces.events:
        yield f"  {event.decision} at {event.script} statement {event.statement}: {event.reason}"
    if surfaces.observed_undeclared:
        yield "  changed but not declared: " + ", ".join(surfaces.observed_undeclared)
    for item in surfaces.implicit:
        yield f"  covered implicitly: {item.object} by {item.owner} ({item.reason})"
    yield surfaces.line()
    for line in (result.impact or {}).get("over_limits", []):
        # A fact of the run, not a verdict: production lanes hold on it (docs/impact.md).
        yield Text(f"impact: over a limit: {line} (held out of production lanes)")
    yield f"isolation: {result.isolation.verdict}"
    after = result.source.get("after")
    if isinstance(after, dict) and after.get("moved_on"):
        # Others wrote the source: said plainly, and not a failed check (core.isolation).
        yield Text(f"  {after['evidence']}")
    yield markup(f"overall: [{VERDICT_STYLE[str(result.overall)]}]{result.overall}[/]")
    yield markup(f"report: {out_dir / 'report.md'}")


def governed_lines(run: GovernedRehearsal) -> Iterator[str]:
    """What a governed run added: the grant it consumed, its ledger record, its packet."""
    if run.grant is not None:
        g = run.grant
        yield (
            f"grant {g.grant.grant_id} (lane {g.grant.lane}) consumed at ledger event "
            f"{g.event.seq}, before any leg ran"
        )
    yield f"recorded: ledger event {run.recorded.seq} (tree {run.verified.tree_hash})"
    if run.probe_failures:
        yield (
            f"recorded FAIL: {len(run.probe_failures)} probe(s) of rollproof's own gates did not "
            "fail closed (`rollproof probe` shows why): " + "; ".join(run.probe_failures)
        )
    for name, (outcome, code) in run.reproduced.items():
        yield f"{name}: {outcome} (exit {code})"
    yield f"packet: {run.packet} (validated, with its governance layer)"
    yield f"checkpoint: {run.packet / 'governance' / 'checkpoint.md'}"
    yield f"status: {run.checkpoint['status']}"
