"""A plain `rollproof rehearse` over an `[impact]` limit says so in its summary (issue 17).

The exit code stays the rollback evidence's (0 here): it is recorded in the packet, recomputed
by the validator, and what makes the run count as evidence; the production lanes are what hold
a change over a limit (docs/impact.md, "What a limit does").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rollproof.assurance.selftest import SOUND_CHANGE, build_tiny_source, write_change
from rollproof.cli import main


@pytest.mark.parametrize(
    ("limits", "over"),
    [
        pytest.param("\n[impact]\nmax_duration_ms = 0\n", True, id="over"),
        pytest.param("\n[impact]\nmax_duration_ms = 600000\n", False, id="within"),
    ],
)
def test_the_summary_names_a_limit_exceeded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], limits: str, over: bool
) -> None:
    source = build_tiny_source(tmp_path / "prod.db")
    files = dict(SOUND_CHANGE)
    files["change.toml"] += limits
    change = write_change(tmp_path / "change", files)
    code = main(["rehearse", str(change), "--source", str(source), "--out", str(tmp_path / "p")])
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("impact: over a limit: ")]
    if over:
        [line] = lines
        assert line.startswith("impact: over a limit: max_duration_ms = 0: the apply's statements ")
        assert line.endswith(" (held out of production lanes)")
    else:
        assert lines == []
