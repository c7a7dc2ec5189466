"""The command line: exit codes, one-line errors, help for every command, and the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

import rollproof.rehearse.flow
from rollproof.cli import cli, main
from rollproof.core.errors import ExitCode, RollproofError
from tests.conftest import MakeChange, assert_valid_report, sha256_file


def _sub(group: click.Group, name: str) -> click.Command:
    """A subcommand as the command line finds it (the top group loads its modules lazily)."""
    cmd = group.get_command(click.Context(group), name)
    assert cmd is not None, name
    return cmd


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name in group.list_commands(click.Context(group)):
        cmd = _sub(group, name)
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(all_commands(cmd, (*prefix, name)))
    return out


@pytest.mark.parametrize("command", all_commands(cli), ids=lambda c: " ".join(c))
def test_every_command_has_help(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: rollproof {' '.join(command)}")
    cmd: click.Command = cli
    for part in command:
        assert isinstance(cmd, click.Group)
        cmd = _sub(cmd, part)
    assert cmd.help, f"{command} has no help text"
    assert " ".join(cmd.help.split("\n")[0].split()) in " ".join(out.split())


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "Usage: rollproof" in capsys.readouterr().err


def test_unknown_option_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rehearse", "--frobnicate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rollproof: error: No such option '--frobnicate'."]


def test_rehearse_writes_report_and_exits_0(
    source_db: Path, make_change: MakeChange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change = make_change(
        "INSERT INTO tags VALUES ('n', 1);", "DELETE FROM tags WHERE label = 'n';", name="add-n"
    )
    out = tmp_path / "out"
    code = main(
        ["rehearse", str(change.directory), "--source", f"sqlite:///{source_db}", "--out", str(out)]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    assert "overall: PASS" in stdout
    assert f"report: {out / 'report.md'}" in stdout
    report = json.loads((out / "report.json").read_text())
    assert_valid_report(report)
    assert report["overall"] == "PASS"
    assert report["change"]["id"] == "add-n"
    assert report["change"]["content_id"] == change.content_id
    assert [leg["verdict"] for leg in report["legs"]] == ["NOT_APPLICABLE", "PASS", "PASS", "PASS"]
    for leg in report["legs"][1:]:
        for digest in leg["fingerprints"].values():
            assert (out / "fingerprints" / (digest.removeprefix("sha256:") + ".json")).is_file()


def test_rehearse_lossy_change_exits_1(
    source_db: Path, make_change: MakeChange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change = make_change(
        "ALTER TABLE customers DROP COLUMN fax;", "ALTER TABLE customers ADD COLUMN fax TEXT;"
    )
    code = main(
        [
            "rehearse",
            str(change.directory),
            "--source",
            str(source_db),
            "--out",
            str(tmp_path / "o"),
            "--legs",
            "revert",
        ]
    )
    assert code == 1
    assert "fax: 100 values lost" in capsys.readouterr().out
    md = (tmp_path / "o" / "report.md").read_text()
    assert "would lose that data for good" in md


def test_rehearse_json_output(
    source_db: Path, make_change: MakeChange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change = make_change("INSERT INTO tags VALUES ('j', 1);", "DELETE FROM tags WHERE label = 'j';")
    code = main(
        [
            "rehearse",
            str(change.directory),
            "--source",
            str(source_db),
            "--out",
            str(tmp_path / "o"),
            "--json",
            "--legs",
            "restore",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "o" / "report.json").read_text())


def test_isolation_failure_exits_3_with_one_line(
    source_db: Path, make_change: MakeChange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change = make_change("INSERT INTO tags VALUES ('i', 1);", "DELETE FROM tags WHERE label = 'i';")
    code = main(
        [
            "rehearse",
            str(change.directory),
            "--source",
            str(source_db),
            "--workdir",
            str(source_db.parent / "w"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 3
    [line] = captured.err.strip().splitlines()
    assert line.startswith("rollproof: isolation not proven: clone-outside-source-dir (")
    assert not (tmp_path / "o").exists()
    assert not (source_db.parent / "w").exists()  # refused before anything was made there


def test_existing_output_directory_is_not_overwritten(
    source_db: Path, make_change: MakeChange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change = make_change("INSERT INTO tags VALUES ('o', 1);", "DELETE FROM tags WHERE label = 'o';")
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["rehearse", str(change.directory), "--source", str(source_db), "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"rollproof: output directory {out} already exists and is not empty; choose another --out"
    )
    assert (out / "keep.txt").read_text() == "mine"


def test_missing_source_exits_2(
    make_change: MakeChange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change = make_change("SELECT 1;", "SELECT 1;")
    code = main(["rehearse", str(change.directory), "--source", str(tmp_path / "nope.db")])
    assert code == 2
    assert (
        capsys.readouterr().err.strip() == f"rollproof: source {tmp_path / 'nope.db'}: no such file"
    )


def test_unexpected_error_is_internal_never_zero(
    source_db: Path,
    make_change: MakeChange,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(rollproof.rehearse.flow, "rehearse", broken)
    change = make_change("SELECT 1;", "SELECT 1;")
    args = ["rehearse", str(change.directory), "--source", str(source_db)]
    assert main(args) == 70
    err = capsys.readouterr().err
    assert err.strip() == (
        "rollproof: internal error (ZeroDivisionError: boom); please report it; "
        "rerun with --debug for a traceback"
    )
    assert main(["--debug", *args]) == 70
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_demo_runs_as_a_user_would(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "rollproof", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "fax: 8,000 values lost (set before, NULL now)" in proc.stdout
    assert "tolerated in revert: sequence audit_log advanced from 412 to 413" in proc.stdout
    assert proc.stdout.rstrip().endswith(f"reports are in {tmp_path / 'demo' / 'packets'}")
    for change_id, overall in (("add-order-priority", "PASS"), ("drop-customer-fax", "FAIL")):
        report = json.loads((tmp_path / "demo" / "packets" / change_id / "report.json").read_text())
        assert_valid_report(report)
        assert report["overall"] == overall
    db = tmp_path / "demo" / "production.db"
    assert sha256_file(db) == report["source"]["bytes_sha256_before"]["production.db"]


def test_demo_refuses_a_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    assert main(["demo", "--dir", str(tmp_path / "mine")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"rollproof: {tmp_path / 'mine'} exists and was not made by `rollproof demo`; "
        "choose another --dir"
    )
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_every_exit_code_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {
        int(line.split("|")[1])
        for line in table.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    }
    assert {int(code) for code in ExitCode} | {130} == documented


def test_every_error_class_maps_to_a_documented_exit_code() -> None:
    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    codes = {cls.__name__: int(cls.exit_code) for cls in subclasses(RollproofError)}
    assert set(codes.values()) <= {int(c) for c in ExitCode}
    assert codes["UsageError"] == 2
    assert codes["ChangeError"] == 2
    assert codes["CheckFailedError"] == 1
    assert codes["IsolationError"] == 3
    assert codes["EnvironmentProblemError"] == 4
    assert codes["InternalError"] == 70


def test_sql_in_a_reason_is_printed_as_text_not_markup(
    source_db: Path, make_change: MakeChange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change = make_change('DELETE FROM "[/]";', "SELECT 1;", surfaces='writes = ["[/]"]\n')
    code = main(
        [
            "rehearse",
            str(change.directory),
            "--source",
            str(source_db),
            "--out",
            str(tmp_path / "o"),
            "--legs",
            "revert",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1  # not 70: rich did not try to read "[/]" as a closing tag
    assert "[/]" in out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["legs"][0]["reason"].endswith("failed: no such table: [/]")


def test_surfaces_command_lists_objects_risks_and_readiness(
    make_change: MakeChange, capsys: pytest.CaptureFixture[str]
) -> None:
    ready = make_change(
        "ALTER TABLE customers DROP COLUMN fax;", "ALTER TABLE customers ADD COLUMN fax TEXT;"
    )
    assert main(["surfaces", str(ready.directory)]) == 0
    out = capsys.readouterr().out
    assert "alter customers" in out
    assert "risk (apply statement 1): " in out
    assert out.rstrip().endswith("scoping: READY")

    undeclared = make_change(
        "DELETE FROM orders;", "SELECT 1;", surfaces='writes = ["customers"]\n'
    )
    assert main(["surfaces", str(undeclared.directory)]) == 3
    out = capsys.readouterr().out
    assert "not ready: apply statement 1 `DELETE FROM orders`: write of undeclared orders" in out
    assert "risk (apply statement 1): " in out
    assert out.rstrip().endswith("scoping: NOT_READY")


def test_surfaces_command_json(make_change: MakeChange, capsys: pytest.CaptureFixture[str]) -> None:
    change = make_change("INSERT INTO tags VALUES ('s', 1);", "DELETE FROM tags WHERE label = 's';")
    assert main(["surfaces", str(change.directory), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "READY"
    assert doc["statements"]["apply"][0]["accesses"] == [
        {"object": "tags", "kind": "WRITE", "object_type": "unknown"}
    ]


def test_demo_in_a_directory_that_cannot_be_made_is_an_environment_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["demo", "--dir", str(blocker / "demo")]) == 4
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"rollproof: {blocker / 'demo'}: cannot create the demo directory: ")
