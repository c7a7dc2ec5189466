"""`rollproof demo`: a sample production database and two changes rehearsed against it, or
(--governed) the governed story, run command by command as a user would type them."""

from __future__ import annotations

from pathlib import Path

import click

from rollproof.cli.app import cli, main
from rollproof.cli.console import out, progress, show, show_lines
from rollproof.cli.options import path_option
from rollproof.cli.views import rehearsal_lines
from rollproof.core.errors import ExitCode


@cli.command()
@path_option(
    "--dir",
    "workdir",
    default=Path("rollproof-demo"),
    show_default=True,
    help="Work directory for the sample database and reports.",
)
@click.option(
    "--governed",
    is_flag=True,
    help="The governed story instead: keys, policy, tickets, blockers, grants, preflight, "
    "rehearsal, decision (HOLD), checkpoint, and production lanes refused.",
)
def demo(workdir: Path, governed: bool) -> None:
    """Build a sample production database and rehearse two changes against it."""
    from rollproof.rehearse.demo import run_demo

    if governed:
        _governed_demo(workdir)
        return

    with progress() as say:
        outcome = run_demo(workdir, progress=say)
    for (result, out_dir), story in zip(outcome.results, outcome.stories, strict=True):
        out.rule(story.title)
        out.print(story.intro)
        show_lines(rehearsal_lines(result, out_dir))
        out.print(story.explain(result))
        out.print()
    out.print(outcome.conclusion)
    out.print(f"reports are in {outcome.packets_dir}")
    raise SystemExit(0 if outcome.as_expected else int(ExitCode.CHECK_FAILED))


def _governed_demo(workdir: Path) -> None:
    """Run the governed story's commands from `workdir`, as a user would type them."""
    import os
    import shlex

    from rollproof.rehearse.demo import prepare_governed_demo

    with progress() as say:
        steps = prepare_governed_demo(workdir, progress=say)
    unexpected = []
    home = Path.cwd()
    os.chdir(workdir)
    try:
        for number, step in enumerate(steps, 1):
            out.rule(f"{number}. {step.title}")
            show("$ rollproof " + " ".join(shlex.quote(a) for a in step.argv))
            code = main(list(step.argv))
            if step.why:
                show(f"→ exit {code}: {step.why}")
            if code != step.expect:
                unexpected.append(f"step {number} exited {code}, expected {step.expect}")
    finally:
        os.chdir(home)
    out.rule()
    if unexpected:
        show("demo: UNEXPECTED: " + "; ".join(unexpected))
        raise SystemExit(int(ExitCode.CHECK_FAILED))
    show(
        "demo: as expected: the change was rehearsed under a consumed rehearsal-only grant, "
        "production stays on HOLD (the operator's decision), and every production lane was "
        f"refused without its own grant. Everything is in {workdir}."
    )
