"""commands.sh and RERUN.sh run as real subprocesses, on the demo's database and changes.

The packets come from `rollproof rehearse` (the CLI, in process) against the demo's sample
production database; the scripts then run with bash from a fresh directory, finding rollproof
the way a reviewer's shell would.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rollproof.assurance.selftest import SOUND_CHANGE, build_tiny_source, write_change
from rollproof.cli import main
from rollproof.rehearse.demo import CHANGES, build_sample_database
from rollproof.rehearse.rerun import RerunOutcome, rerun_packet
from rollproof.verify.reader import validate_packet
from tests.packet_fixtures import subprocess_env


def rehearse_cli(change: Path, dsn: str, out: Path) -> int:
    return main(["rehearse", str(change), "--source", dsn, "--out", str(out)])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's two changes rehearsed against its sample database: change id -> packet."""
    root = tmp_path_factory.mktemp("demo")
    db = root / "prod" / "production.db"
    db.parent.mkdir()
    build_sample_database(db)
    packets = {}
    for change_id, files in CHANGES.items():
        cdir = write_change(root / "changes" / change_id, files)
        out = root / "packets" / change_id
        code = rehearse_cli(cdir, f"sqlite:///{db}", out)
        assert code == (0 if change_id == "add-order-priority" else 1)
        packets[change_id] = out
    return packets


def run_script(
    script: Path, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args],
        cwd=cwd,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("change_id", list(CHANGES))
def test_commands_sh_overall_pass(demo: dict[str, Path], tmp_path: Path, change_id: str) -> None:
    """The lossy change reproduces its FAIL (exit 1): reproducing it is a PASS of commands.sh."""
    proc = run_script(demo[change_id] / "commands.sh", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OVERALL PASS" in proc.stdout
    (out,) = tmp_path.glob("rollproof-reproduce.*")
    recorded = json.loads((demo[change_id] / "exit_codes.json").read_text())
    expected_rc = recorded["commands"][0]["exit_code"]
    assert json.loads((out / "exit_codes.json").read_text()) == {
        "commands": [
            {"exit_code": expected_rc, "expected": expected_rc, "name": "rehearse", "step": 1},
            {"exit_code": 0, "expected": 0, "name": "validate", "step": 2},
        ],
        "schema": "rollproof/reproduce/v1",
    }
    reproduced = validate_packet(out / "packet")
    original = validate_packet(demo[change_id])
    assert reproduced.legs == original.legs
    assert reproduced.content_id == original.content_id


def test_commands_sh_into_a_named_directory_with_rollproof_env(
    demo: dict[str, Path], tmp_path: Path
) -> None:
    env = subprocess_env(ROLLPROOF=f"{sys.executable} -m rollproof")
    proc = run_script(demo["add-order-priority"] / "commands.sh", tmp_path, "again", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "again" / "packet" / "MANIFEST.json").is_file()
    proc = run_script(demo["add-order-priority"] / "commands.sh", tmp_path, "again", env=env)
    assert proc.returncode == 2
    assert "must be a new directory" in proc.stderr


def test_rerun_sh_pass_match(demo: dict[str, Path], tmp_path: Path) -> None:
    proc = run_script(demo["add-order-priority"] / "RERUN.sh", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS/MATCH" in proc.stdout
    assert "MISMATCH" not in proc.stdout.replace("PASS/MATCH", "")


def test_rerun_sh_finds_rollproof_through_python3(demo: dict[str, Path], tmp_path: Path) -> None:
    """No `rollproof` on PATH: the script falls back to `python3 -m rollproof`."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # A wrapper, not a symlink: a symlinked virtual-environment interpreter no longer finds its
    # pyvenv.cfg, so rollproof would not be importable through it.
    (bindir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bindir / "python3").chmod(0o755)
    env = subprocess_env(PATH=f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    proc = run_script(demo["drop-customer-fax"] / "RERUN.sh", tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS/MATCH" in proc.stdout


def test_scripts_say_when_rollproof_cannot_be_found(demo: dict[str, Path], tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").write_text("#!/bin/sh\nexit 1\n")  # a python3 that imports nothing
    (bindir / "python3").chmod(0o755)
    env = subprocess_env(PATH=f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    proc = run_script(demo["add-order-priority"] / "RERUN.sh", tmp_path, env=env)
    assert proc.returncode == 4
    assert "rollproof not found" in proc.stderr


# -- on a small source of their own: drift, failure, non-determinism -------------------------


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """(source database, packet) for the selftest's sound change."""
    (tmp_path / "src").mkdir()
    source = build_tiny_source(tmp_path / "src" / "source.db")
    change = write_change(tmp_path / "changes" / "add-item-note", SOUND_CHANGE)
    packet = tmp_path / "packet"
    assert rehearse_cli(change, f"sqlite:///{source}", packet) == 0
    return source, packet


def test_rerun_sh_reports_source_drift(small: tuple[Path, Path], tmp_path: Path) -> None:
    source, packet = small
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE items SET qty = qty + 1 WHERE id = 3")
    proc = run_script(packet / "RERUN.sh", tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MISMATCH source: recorded sha256:" in proc.stdout
    assert "MISMATCH transaction.before" in proc.stdout
    assert "FAIL/MISMATCH: source drifted" in proc.stdout


def test_commands_sh_names_the_command_that_failed(
    small: tuple[Path, Path], tmp_path: Path
) -> None:
    source, packet = small
    source.unlink()
    proc = run_script(packet / "commands.sh", tmp_path)
    assert proc.returncode == 1
    assert "FAILED: step 1, rehearse: exited 2, recorded 0" in proc.stdout
    assert "OVERALL FAIL" in proc.stdout
    assert "OVERALL PASS" not in proc.stdout


def test_commands_sh_names_verdicts_that_differ(small: tuple[Path, Path], tmp_path: Path) -> None:
    """A source that changed so the apply now fails: the exit code and verdicts differ."""
    source, packet = small
    with sqlite3.connect(source) as conn:
        conn.execute("ALTER TABLE items ADD COLUMN note TEXT")  # apply's ADD COLUMN now fails
    proc = run_script(packet / "commands.sh", tmp_path)
    assert proc.returncode == 1
    assert "FAILED: step 1, rehearse: exited 1, recorded 0" in proc.stdout
    assert "FAILED: reproduced verdicts differ from the recorded ones" in proc.stdout
    assert "+leg transaction FAIL" in proc.stdout


NON_DETERMINISTIC = {
    "change.toml": (
        'id = "stamp-items"\napply = "apply.sql"\nrevert = "revert.sql"\n\n'
        '[surfaces]\nreads = []\nwrites = ["items"]\n'
    ),
    "apply.sql": "ALTER TABLE items ADD COLUMN stamp TEXT;\nUPDATE items SET stamp = random();\n",
    "revert.sql": "ALTER TABLE items DROP COLUMN stamp;\n",
}


def test_rerun_reports_a_non_deterministic_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = build_tiny_source(tmp_path / "source.db")
    change = write_change(tmp_path / "changes" / "stamp-items", NON_DETERMINISTIC)
    # random() differs between the transaction, revert and restore legs of one rehearsal, but
    # each leg's invariants still hold: the packet is valid.
    assert rehearse_cli(change, f"sqlite:///{source}", tmp_path / "packet") == 0
    result = rerun_packet(tmp_path / "packet")
    assert result.outcome is RerunOutcome.NON_DETERMINISTIC
    assert result.only_after_apply
    assert {m.where for m in result.mismatches} >= {"transaction.after_apply"}
    assert "source" not in {m.where for m in result.mismatches}
    assert int(result.exit_code) == 1
    assert main(["rerun", str(tmp_path / "packet")]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH transaction.after_apply" in out
    assert "FAIL/MISMATCH: non-deterministic change" in out
    # the table and column the change writes differently each time
    assert "table items column stamp differs between runs (3 rows)" in out


def test_rerun_refuses_an_invalid_packet(small: tuple[Path, Path]) -> None:
    _, packet = small
    (packet / "report.md").write_text("# Rehearsal: PASS (trust me)\n")
    assert main(["rerun", str(packet)]) == 1


def test_commands_sh_repeats_policy_and_allow_undeclared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Options that change verdicts are reproduced: the policy file (by absolute path, found
    from any directory) and --allow-undeclared (here: a change that declares nothing)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "rollproof.toml").write_text('[forbidden]\nobjects = ["secret_*"]\n')
    source = build_tiny_source(work / "source.db")
    undeclared = {
        **SOUND_CHANGE,
        "change.toml": SOUND_CHANGE["change.toml"].replace('writes = ["items"]', "writes = []"),
    }
    change = write_change(work / "add-item-note", undeclared)
    argv = ["rehearse", str(change), "--source", f"sqlite:///{source}", "--out", "packet"]
    assert main(argv) == 3  # scoping NOT_READY holds the rehearsal
    code = main([*argv, "--allow-undeclared"])
    packet = work / "packet"
    script = (packet / "commands.sh").read_text()
    assert "--allow-undeclared" in script
    assert f"--policy {work / 'rollproof.toml'}" in script
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_script(packet / "commands.sh", elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OVERALL PASS" in proc.stdout
    # The undeclared write is denied at run time: surfaces FAIL, and the change is held (3).
    assert code == validate_packet(packet).exit_code == 3
