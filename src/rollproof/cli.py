"""The `rollproof` command: parse, call one public function, render, exit.

This is the only module that prints or exits. Each command is a thin layer over a library
function; `main` holds the one `try` that turns a RollproofError into its documented exit code
and one line on stderr, and anything unexpected into exit 70, never 0 and never a traceback
(unless --debug asks for one).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from rollproof import __version__
from rollproof.errors import ExitCode, RollproofError

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
    from rollproof.rehearsal import RehearsalResult

    assert isinstance(result, RehearsalResult)
    table = Table(title=f"{result.change.id} — rollback rehearsal", title_justify="left")
    table.add_column("leg")
    table.add_column("verdict")
    table.add_column("reason", overflow="fold")
    for leg in result.legs:
        style = VERDICT_STYLE[str(leg.verdict)]
        table.add_row(str(leg.name), f"[{style}]{leg.verdict}[/]", leg.reason or "")
    _out.print(table)
    for leg in result.legs:
        for d in leg.tolerated:
            _out.print(f"  tolerated in {leg.name}: {d.summary}")
    iso = str(result.isolation.verdict)
    _out.print(f"isolation: {iso}")
    style = VERDICT_STYLE[str(result.overall)]
    _out.print(f"overall: [{style}]{result.overall}[/]")
    _out.print(f"report: {out_dir / 'report.md'}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rollproof")
@click.option("--debug", is_flag=True, help="Show a traceback for unexpected errors.")
def cli(debug: bool) -> None:
    """Prove a database change can be undone before it may run against production.

    Exit codes: 0 passed, 1 a check failed, 2 bad input, 3 held (isolation not proven or
    result unknown), 4 environment problem, 70 internal error.
    """


@cli.command()
@click.argument("change", type=click.Path(path_type=Path))
@click.option(
    "--source",
    required=True,
    metavar="DSN",
    help="The database the change is meant for: sqlite:///path.db (opened read-only).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output directory (new or empty). Default: .rollproof/packets/<change>-<utc stamp>.",
)
@click.option(
    "--legs",
    multiple=True,
    metavar="LEGS",
    help="Comma-separated legs: read-only, transaction, revert, restore, reapply. "
    "Default: read-only,transaction,revert,restore.",
)
@click.option("--keep-clone", is_flag=True, help="Keep the private clone directory afterwards.")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to make the private clone directory (default: the system temp dir).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print report.json to stdout instead of a table."
)
def rehearse(
    change: Path,
    source: str,
    out: Path | None,
    legs: tuple[str, ...],
    keep_clone: bool,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """Rehearse CHANGE (a directory with change.toml) on an isolated clone of --source."""
    from rollproof.change import load_change
    from rollproof.rehearsal import parse_legs
    from rollproof.rehearsal import rehearse as run
    from rollproof.report import default_out_dir, report_json, write_report

    loaded = load_change(change)
    with _progress() as say:
        result = run(
            loaded,
            source,
            legs=parse_legs(legs),
            workdir=workdir,
            keep_clone=keep_clone,
            progress=say,
        )
    out_dir = write_report(result, out or default_out_dir(result, Path(".rollproof/packets")))
    if as_json:
        _out.print_json(json.dumps(report_json(result)))
    else:
        _render_result(result, out_dir)
        if result.clone_kept:
            _out.print(f"clone kept: {result.clone_kept}")
    raise SystemExit(int(result.exit_code))


@cli.command()
@click.argument("database", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole fingerprint as JSON.")
def fingerprint(database: Path, as_json: bool) -> None:
    """Print the content fingerprint of a SQLite DATABASE (opened read-only)."""
    from rollproof.engines.sqlite import fingerprint_file

    fp = fingerprint_file(database)
    if as_json:
        _out.print_json(json.dumps(fp.to_json()))
        return
    _out.print(fp.digest)
    for name, t in sorted(fp.tables.items()):
        _out.print(f"  table {name}: {t.digest} ({t.rows:,} rows, {t.order})")
    for name, seq in sorted(fp.sequences.items()):
        _out.print(f"  sequence {name}: {seq}")
    _out.print(f"  schema: {fp.schema_structural} (ddl text {fp.schema_ddl_text})")
    if fp.excluded:
        _out.print("  excluded: " + ", ".join(fp.excluded))


@cli.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(path_type=Path),
    default=Path("rollproof-demo"),
    show_default=True,
    help="Work directory for the sample database and reports.",
)
def demo(workdir: Path) -> None:
    """Build a sample production database and rehearse two changes against it."""
    from rollproof.demo import run_demo

    with _progress() as say:
        outcome = run_demo(workdir, progress=say)
    for (result, out_dir), story in zip(outcome.results, outcome.stories, strict=True):
        _out.rule(story.title)
        _out.print(story.intro)
        _render_result(result, out_dir)
        _out.print(story.explain(result))
        _out.print()
    _out.print(outcome.conclusion)
    _out.print(f"reports are in {outcome.packets_dir}")
    raise SystemExit(0 if outcome.as_expected else int(ExitCode.CHECK_FAILED))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="rollproof", standalone_mode=False)
        return int(rv or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(ExitCode.INTERNAL)
    except click.exceptions.NoArgsIsHelpError as e:
        _err.print(e.format_message(), markup=False)
        return int(ExitCode.USAGE)
    except click.ClickException as e:
        _err.print(f"rollproof: error: {e.format_message()}", markup=False)
        return int(ExitCode.USAGE)
    except click.exceptions.Abort:
        _err.print("rollproof: interrupted", markup=False)
        return 130
    except RollproofError as e:
        if debug:
            traceback.print_exc()
        _err.print(f"rollproof: {e}", markup=False)
        return int(e.exit_code)
    except KeyboardInterrupt:
        _err.print("rollproof: interrupted", markup=False)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        _err.print(
            f"rollproof: internal error ({type(e).__name__}: {e}); "
            "please report it; rerun with --debug for a traceback",
            markup=False,
        )
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
