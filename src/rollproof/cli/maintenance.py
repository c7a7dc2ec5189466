"""`rollproof gc`: remove what runs that died left behind (workspaces, partial packets)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rollproof.cli.app import cli
from rollproof.cli.console import render
from rollproof.cli.options import json_option, path_option


@cli.command()
@path_option(
    "--workdir",
    "workdirs",
    multiple=True,
    help="Also sweep this --workdir (the temporary directory is always swept); may be repeated.",
)
@path_option(
    "--packets",
    "packet_roots",
    multiple=True,
    help="Sweep partial packets under this directory (default: .rollproof/packets).",
)
@json_option("Print what was removed as JSON.")
def gc(workdirs: tuple[Path, ...], packet_roots: tuple[Path, ...], as_json: bool) -> None:
    """Remove workspaces (copies of production) and partial packets of runs that are gone.

    A run holds a lock on its directory for as long as it lives, so a live run's directory is
    never removed; kept clones (--keep-clone) are left for you to remove."""
    from rollproof.engines.workspace import sweep

    removed = sweep([Path(tempfile.gettempdir()), *workdirs])
    removed += sweep(list(packet_roots) or [Path(".rollproof/packets")], partial_only=True)
    render(
        as_json,
        lambda: {"removed": [str(p) for p in removed]},
        [f"removed {p}" for p in removed] + [f"gc: {len(removed)} removed"],
    )
