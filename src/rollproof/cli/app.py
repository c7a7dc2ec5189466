"""The `rollproof` command: the group, the consoles, and `main`'s one `try`.

The cli package is the only code that prints or exits; its command modules (evidence,
governance) are thin layers over library functions. `main` holds the one `try` that turns a
RollproofError into its documented exit code and one line on stderr, and anything unexpected
into exit 70, never 0 and never a traceback (unless --debug asks for one).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rollproof.core.errors import ExitCode, RollproofError
from rollproof.core.redact import scrub, secrets_in
from rollproof.core.version import __version__

if TYPE_CHECKING:
    from rollproof.governance.flow import GovernedRehearsal

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

VERDICT_STYLE = {
    "PASS": "green",
    "FAIL": "bold red",
    "NOT_APPLICABLE": "yellow",
    "UNKNOWN": "bold yellow",
}


@contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    """Show the current step on an interactive stderr; stay silent when piped or in CI."""
    if not _err.is_terminal:
        yield lambda _msg: None
        return
    with _err.status("starting…") as status:
        yield lambda msg: status.update(msg)


def _render_result(result: object, out_dir: Path) -> None:
    from rollproof.rehearse.flow import RehearsalResult

    assert isinstance(result, RehearsalResult)
    table = Table(title=f"{result.change.id} — rollback rehearsal", title_justify="left")
    table.add_column("leg")
    table.add_column("verdict")
    table.add_column("reason", overflow="fold")
    for leg in result.legs:
        style = VERDICT_STYLE[str(leg.verdict)]
        # Reasons quote the change's SQL: shown as text, never interpreted as markup.
        table.add_row(str(leg.name), Text(str(leg.verdict), style=style), Text(leg.reason or ""))
    _out.print(table)
    for leg in result.legs:
        for d in leg.tolerated:
            _out.print(f"  tolerated in {leg.name}: {d.summary}", markup=False)
    surfaces = result.surfaces
    for role, risk in surfaces.scoping.risks:
        _out.print(
            f"  risk ({role} statement {risk.statement}): {risk.message}; {risk.proven_by}",
            markup=False,
        )
    for event in surfaces.events:
        _out.print(
            f"  {event.decision} at {event.script} statement {event.statement}: {event.reason}",
            markup=False,
        )
    if surfaces.observed_undeclared:
        _out.print(
            "  changed but not declared: " + ", ".join(surfaces.observed_undeclared), markup=False
        )
    scoping = str(surfaces.scoping.status)
    if surfaces.allow_undeclared:
        scoping += " (rehearsed with --allow-undeclared)"
    _out.print(f"surfaces: scoping {scoping}; {surfaces.forbidden_line()}", markup=False)
    iso = str(result.isolation.verdict)
    _out.print(f"isolation: {iso}")
    style = VERDICT_STYLE[str(result.overall)]
    _out.print(f"overall: [{style}]{result.overall}[/]")
    _out.print(f"report: {out_dir / 'report.md'}")


def _now() -> datetime:
    return datetime.now(UTC)


def _read_grant(path: Path) -> bytes:
    from rollproof.core.errors import UsageError

    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read grant {path}: {e.strerror}") from e


def _render_governed(run: GovernedRehearsal) -> None:
    if run.grant is not None:
        g = run.grant
        _out.print(
            f"grant {g.grant.grant_id} (lane {g.grant.lane}) consumed at ledger event "
            f"{g.event.seq}, before any leg ran",
            markup=False,
        )
    _out.print(f"recorded: ledger event {run.recorded.seq} (tree {run.verified.tree_hash})")
    for name, (outcome, code) in run.reproduced.items():
        _out.print(f"{name}: {outcome} (exit {code})", markup=False)
    _out.print(f"packet: {run.packet} (validated, with its governance layer)", markup=False)
    _out.print(f"checkpoint: {run.packet / 'governance' / 'checkpoint.md'}", markup=False)
    _out.print(f"status: {run.checkpoint['status']}", markup=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rollproof")
@click.option("--debug", is_flag=True, help="Show a traceback for unexpected errors.")
def cli(debug: bool) -> None:
    """Prove a database change can be undone before it may run against production.

    Exit codes: 0 passed, 1 a check failed, 2 bad input, 3 held (isolation not proven,
    result unknown, HOLD, a grant missing or refused), 4 environment problem, 70 internal error.
    """


def _shell_word(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    # A password given in a DSN is scrubbed from every error line, even one a lower layer
    # built by echoing its input.
    secrets = secrets_in(args)
    try:
        rv = cli.main(
            args=args, prog_name="rollproof", standalone_mode=False, obj={"argv": list(args)}
        )
        return int(rv or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(ExitCode.INTERNAL)
    except click.exceptions.NoArgsIsHelpError as e:
        _err.print(scrub(e.format_message(), secrets), markup=False)
        return int(ExitCode.USAGE)
    except click.ClickException as e:
        _err.print(scrub(f"rollproof: error: {e.format_message()}", secrets), markup=False)
        return int(ExitCode.USAGE)
    except click.exceptions.Abort:
        _err.print("rollproof: interrupted", markup=False)
        return 130
    except RollproofError as e:
        if debug:
            _err.print(scrub(traceback.format_exc(), secrets), markup=False, end="")
        _err.print(scrub(f"rollproof: {e}", secrets), markup=False)
        return int(e.exit_code)
    except KeyboardInterrupt:
        _err.print("rollproof: interrupted", markup=False)
        return 130
    except Exception as e:
        if debug:
            _err.print(scrub(traceback.format_exc(), secrets), markup=False, end="")
        _err.print(
            scrub(
                f"rollproof: internal error ({type(e).__name__}: {e}); "
                "please report it; rerun with --debug for a traceback",
                secrets,
            ),
            markup=False,
        )
        return int(ExitCode.INTERNAL)
