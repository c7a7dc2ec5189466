"""RERUN.sh names what differs between runs of a non-deterministic change: tables, columns.

Each packet comes from a real rehearsal; on SQLite RERUN.sh then runs as a real subprocess
(bash, the way a reviewer runs it), on PostgreSQL `rollproof rerun` runs in process. The changes use random() and the current time, so every re-run's
after-apply state differs from the recorded one; rollproof applies the change twice more and
compares the two copies row by row to name the columns.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rollproof.assurance.selftest import SOUND_CHANGE, build_tiny_source, write_change
from rollproof.cli import main
from rollproof.core.fingerprint import Difference
from rollproof.rehearse.rerun import between_runs
from tests.packet_fixtures import subprocess_env
from tests.pg_fixtures import (
    MakeSource,
    Servers,
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)


def stamp_change(apply: str) -> dict[str, str]:
    return {
        "change.toml": (
            'id = "stamp-items"\napply = "apply.sql"\nrevert = "revert.sql"\n\n'
            '[surfaces]\nreads = []\nwrites = ["items"]\n'
        ),
        "apply.sql": apply,
        "revert.sql": "ALTER TABLE items DROP COLUMN stamp;\nALTER TABLE items DROP COLUMN fixed;\n",
    }


def rerun_sh(packet: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(packet / "RERUN.sh")],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def sqlite_packet(tmp_path: Path, files: dict[str, str]) -> Path:
    source = build_tiny_source(tmp_path / "source.db")
    change = write_change(tmp_path / "changes" / "stamp-items", files)
    out = tmp_path / "packet"
    argv = ["rehearse", str(change), "--source", f"sqlite:///{source}", "--out", str(out)]
    assert main([*argv, "--legs", "transaction,revert"]) == 0
    return out


@pytest.mark.parametrize(
    "value",
    ["random()", "strftime('%Y-%m-%d %H:%M:%f', 'now')"],
    ids=["random", "current-time"],
)
def test_rerun_sh_names_the_column_that_differs_on_sqlite(tmp_path: Path, value: str) -> None:
    apply = (
        "ALTER TABLE items ADD COLUMN stamp TEXT;\nALTER TABLE items ADD COLUMN fixed INTEGER;\n"
        f"UPDATE items SET stamp = {value}, fixed = qty * 2;\n"
    )
    packet = sqlite_packet(tmp_path, stamp_change(apply))
    proc = rerun_sh(packet, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        "FAIL/MISMATCH: non-deterministic change: table items column stamp differs between "
        "runs (3 rows); the source is unchanged and only after-apply points differ "
        "(e.g. CURRENT_TIMESTAMP, random()): the rollbacks agree"
    )
    assert "column fixed" not in proc.stdout  # computed from the row: the same every run


def test_rerun_sh_of_a_deterministic_change_matches(tmp_path: Path) -> None:
    """The positive twin: the same kind of change without random() or the time."""
    packet = sqlite_packet(tmp_path, SOUND_CHANGE)
    proc = rerun_sh(packet, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS/MATCH" in proc.stdout
    assert "differs between runs" not in proc.stdout


def test_rerun_names_the_column_on_postgres(
    pg_servers: Servers,
    pg_source: MakeSource,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = pg_source(
        "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, qty integer);\n"
        "INSERT INTO items SELECT i, 'item ' || i, i FROM generate_series(1, 20) AS i;\n"
    )
    change = write_change(
        tmp_path / "changes" / "stamp-items",
        stamp_change(
            "ALTER TABLE items ADD COLUMN stamp timestamptz;\n"
            "ALTER TABLE items ADD COLUMN fixed integer;\n"
            "UPDATE items SET stamp = clock_timestamp(), fixed = qty * 2;\n"
        ),
    )
    out = tmp_path / "packet"
    argv = ["rehearse", str(change), "--source", dsn, "--scratch", pg_servers.scratch]
    assert main([*argv, "--out", str(out), "--legs", "transaction"]) == 0
    capsys.readouterr()
    # `rollproof rerun`, what RERUN.sh runs, in process: a PostgreSQL clone costs seconds.
    assert main(["rerun", str(out)]) == 1
    printed = capsys.readouterr().out
    assert printed.splitlines()[-1].startswith(
        "FAIL/MISMATCH: non-deterministic change: table items column stamp differs "
        "between runs (20 rows); the source is unchanged"
    )
    assert "column fixed" not in printed


# -- the phrases, for what two applies cannot tell -------------------------------------------


def test_phrases_say_when_columns_cannot_be_named() -> None:
    changed = [Difference("table:a", "changed", ""), Difference("table:b", "changed", "")]
    others = [
        Difference("schema:index:a_stamp", "added", ""),
        Difference("sequence:a", "advanced", ""),
    ]
    agreed = {"rows_changed": 0, "rows_missing": 0, "rows_added": 0, "columns_changed": {}}
    probed = {
        "a": Difference("table:a", "changed", "", agreed),
        "b": Difference("table:b", "changed", "", {"columns_missing": [], "columns_added": []}),
    }
    assert between_runs([*changed, *others], probed) == (
        "table a differs between runs (two applies now agreed: no column named)",
        "table b differs between runs (no primary key to match rows: no column named)",
        "schema index:a_stamp differs between runs (added)",
        "sequence a differs between runs (advanced)",
    )
    assert between_runs(changed, None) == (
        "table a differs between runs",
        "table b differs between runs",
    )
    keyless = {
        "a": Difference(
            "table:a", "changed", "", {"distinct_rows_missing": 2, "distinct_rows_added": 2}
        )
    }
    assert between_runs(changed[:1], keyless) == (
        "table a rows differ between runs (2 distinct rows only in the first, 2 only in the "
        "second)",
    )
