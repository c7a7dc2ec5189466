"""`rollproof rehearse` writes a complete packet, atomically, that validates and says what ran."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from rollproof.assurance.selftest import (
    LOSSY_CHANGE,
    SOUND_CHANGE,
    build_tiny_source,
    tiny_rehearsal,
    write_change,
)
from rollproof.cli import main
from rollproof.core.canonical import canonical_json
from rollproof.core.change import load_change
from rollproof.evidence.build import PacketPathError
from rollproof.rehearse.demo import run_demo
from rollproof.rehearse.packet import build_packet
from rollproof.verify.layout import MANIFEST, TREE_HASH, manifest_json, payload_of
from rollproof.verify.reader import check_packet, validate_packet
from tests.packet_fixtures import read_tree

TREE_HASH_COMMAND = (
    "find . -type f ! -path ./MANIFEST.json ! -path ./TREE_HASH ! -path ./attestation.dsse.json"
    " | sed 's|^\\./||' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum | cut -d' ' -f1"
)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    build_tiny_source(tmp_path / "source.db")
    write_change(tmp_path / "changes" / "add-item-note", SOUND_CHANGE)
    write_change(tmp_path / "changes" / "drop-item-qty", LOSSY_CHANGE)
    return tmp_path


@pytest.mark.parametrize(
    ("change_id", "exit_code"),
    [pytest.param("add-item-note", 0, id="pass"), pytest.param("drop-item-qty", 1, id="fail")],
)
def test_rehearse_writes_a_full_packet_at_the_default_place(
    workspace: Path, change_id: str, exit_code: int
) -> None:
    argv = ["rehearse", f"changes/{change_id}", "--source", "sqlite:///source.db"]
    assert main(argv) == exit_code
    (packet,) = (workspace / ".rollproof" / "packets").iterdir()
    assert packet.name.startswith(f"{change_id}-")
    assert packet.name.endswith("Z")
    files = read_tree(packet)
    report = json.loads(files["report.json"])
    fingerprints = {p for p in files if p.startswith("fingerprints/")}
    assert set(files) - fingerprints == {
        "MANIFEST.json",
        "TREE_HASH",
        "RERUN.sh",
        "commands.sh",
        "exit_codes.json",
        "isolation.json",
        "surfaces.json",
        "report.json",
        "report.md",
        *(f"change/{rel}" for rel in load_change(workspace / "changes" / change_id).files),
    }
    assert fingerprints
    # change/ is a byte copy of the change's files
    change = load_change(workspace / "changes" / change_id)
    assert {rel: files[f"change/{rel}"] for rel in change.files} == dict(change.files)
    # every command's exit code, and it is the exit code the process returned
    exit_codes = json.loads(files["exit_codes.json"])
    assert exit_codes["commands"] == [
        {"step": 1, "name": "rehearse", "argv": ["rollproof", *argv], "exit_code": exit_code}
    ]
    # the manifest: canonical JSON of every other file, sorted
    assert files[MANIFEST] == canonical_json(manifest_json(payload_of(files)))
    assert [f["path"] for f in json.loads(files[MANIFEST])["files"]] == sorted(payload_of(files))
    # the tree hash, recomputed with coreutils as the docs say
    shell = subprocess.run(
        ["bash", "-c", TREE_HASH_COMMAND], cwd=packet, capture_output=True, text=True, check=True
    )
    assert files[TREE_HASH] == (shell.stdout.strip() + "\n").encode()
    for script in ("commands.sh", "RERUN.sh"):
        assert stat.S_IMODE(os.stat(packet / script).st_mode) == 0o755
    verified = validate_packet(packet)
    assert verified.exit_code == exit_code
    assert str(verified.overall) == report["overall"]


def test_no_partial_packet_is_left_behind(workspace: Path) -> None:
    out = workspace / "out"
    out.mkdir()
    (out / "keep.txt").write_text("not evidence")
    argv = ["rehearse", "changes/add-item-note", "--source", "sqlite:///source.db"]
    assert main([*argv, "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in workspace.iterdir() if ".partial-" in p.name] == []
    assert main([*argv, "--out", str(workspace / "fresh")]) == 0
    assert [p.name for p in workspace.iterdir() if ".partial-" in p.name] == []
    assert check_packet(workspace / "fresh").ok


def test_change_file_names_outside_the_grammar_are_refused_before_rehearsing(
    workspace: Path,
) -> None:
    cdir = workspace / "changes" / "spaced"
    cdir.mkdir()
    (cdir / "my apply.sql").write_text("ALTER TABLE items ADD COLUMN x TEXT;\n")
    (cdir / "change.toml").write_text(
        'apply = "my apply.sql"\nrevert_sql = "ALTER TABLE items DROP COLUMN x;"\n\n'
        '[surfaces]\nwrites = ["items"]\n'
    )
    assert main(["rehearse", str(cdir), "--source", "sqlite:///source.db"]) == 2
    assert not (workspace / ".rollproof").exists()
    result = tiny_rehearsal(workspace / "source.db", workspace / "changes" / "add-item-note")
    with pytest.raises(PacketPathError):
        build_packet(dataclasses.replace(result, change=load_change(cdir)))


def test_the_demo_writes_packets_that_validate(tmp_path: Path) -> None:
    outcome = run_demo(tmp_path / "demo")
    assert outcome.as_expected
    verdicts = {}
    for _, packet in outcome.results:
        verified = validate_packet(packet)
        verdicts[verified.change_id] = str(verified.overall)
    assert verdicts == {"add-order-priority": "PASS", "drop-customer-fax": "FAIL"}
