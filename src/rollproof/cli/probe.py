"""`rollproof probe`: run adversarial inputs against rollproof's own gates (assurance/probes.py)."""

from __future__ import annotations

import click

from rollproof.cli.app import cli
from rollproof.cli.console import render
from rollproof.cli.options import json_option
from rollproof.core.errors import UsageError


def _overrides(values: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        name, sep, code = value.partition("=")
        if not sep or not code.isdigit():
            raise UsageError(f"--expect-exit wants NAME=CODE, not {value!r}")
        out[name] = int(code)
    return out


@cli.command()
@click.option(
    "--only", multiple=True, metavar="NAME", help="Run only this probe (and the control)."
)
@click.option(
    "--expect-exit",
    "expect_exit",
    multiple=True,
    metavar="NAME=CODE",
    hidden=True,
    help="Override a probe's expected exit code (to show a wrong expectation is reported).",
)
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Parallel probes.")
@json_option("Print every probe (name, expected, observed, passed, leaked) as JSON.")
def probe(
    only: tuple[str, ...],
    expect_exit: tuple[str, ...],
    jobs: int | None,
    as_json: bool,
) -> int:
    """Run a catalogue of bad inputs against rollproof's own gates, each in a subprocess in a
    disposable governed workspace it builds itself (its own keys, ledger and production file:
    nothing of the current workspace is read or touched); exit 0 only when every probe failed
    closed as expected, no planted secret leaked, and the control (a sound rehearsal) was
    allowed."""
    from rollproof.assurance.probes import run_probes

    try:
        run = run_probes(jobs=jobs, only=only, expect=_overrides(expect_exit))
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    lines = [
        f"{'PASS' if r.passed else 'FAIL'} {r.name}: expected exit {r.expected.exit} "
        f"({r.expected.contains!r}), observed {r.observed_exit}"
        f"{'' if r.matched else ', message differs'}{', LEAKED' if r.leaked else ''}"
        + ("" if r.passed else f": {r.detail}")
        for r in (*run.probes, run.control)
    ]
    render(as_json, run.as_json, [*lines, run.line(), f"({run.seconds:.1f} s)"])
    return 0 if run.ok and not run.leaked else 1
