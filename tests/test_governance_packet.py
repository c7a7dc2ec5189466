"""A governed packet on disk: the governance layer validates, is sealed over the tree hash, and the
packet's own scripts and tree-hash recipe keep working beside it (ungoverned packets, the golden
one included, are byte for byte as before); the demo tells the whole story."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.verify.findings import FindingCode
from rollproof.verify.layout import GOVERNANCE_FILES, GOVERNANCE_SEAL
from rollproof.verify.reader import check_packet
from tests.packet_fixtures import subprocess_env
from tests.test_governance_cli import Workspace, make_workspace


@pytest.fixture
def governed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[Workspace, Path]:
    ws = make_workspace(tmp_path, monkeypatch, capsys)
    assert ws.rehearse("--grant", str(ws.issue("g"))).code == 0
    return ws, tmp_path / "packets" / "p"


def test_a_governed_packet_validates_with_its_layer(
    governed: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, packet = governed
    report = check_packet(packet)
    assert report.ok
    assert report.packet is not None
    assert report.packet.decision is not None
    assert report.packet.decision["default"] == "HOLD"
    assert sorted(report.packet.governance_files) == sorted([*GOVERNANCE_FILES, GOVERNANCE_SEAL])
    seal = json.loads((packet / GOVERNANCE_SEAL).read_text())
    assert seal["tree_hash"] == (packet / "TREE_HASH").read_text().strip()
    assert main(["validate", str(packet)]) == 0
    assert "governance layer sealed over this tree: decision default HOLD" in (
        capsys.readouterr().out
    )


def _same_size_edit(path: Path) -> None:
    data = path.read_bytes()
    assert b'"apply_now":"NO"' in data
    path.write_bytes(data.replace(b'"apply_now":"NO"', b'"apply_now":"ON"'))


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        pytest.param(
            lambda p: _same_size_edit(p / "governance" / "decision.json"),
            FindingCode.SHA256_MISMATCH,
            id="decision-edited",
        ),
        pytest.param(
            lambda p: (p / "governance" / "decision.json").write_text("{}"),
            FindingCode.SIZE_MISMATCH,
            id="decision-replaced",
        ),
        pytest.param(
            lambda p: (p / "governance" / "checkpoint.md").unlink(),
            FindingCode.FILE_MISSING,
            id="checkpoint-deleted",
        ),
        pytest.param(
            lambda p: (p / "governance" / "notes.md").write_text("x"),
            FindingCode.FILE_EXTRA,
            id="extra-layer-file",
        ),
        pytest.param(
            lambda p: (p / GOVERNANCE_SEAL).unlink(),
            FindingCode.FILE_EXTRA,
            id="seal-deleted",
        ),
        pytest.param(
            lambda p: os.symlink("/etc/passwd", p / "governance" / "link.md"),
            FindingCode.FILE_EXTRA,
            id="symlink-beside",
        ),
    ],
)
def test_the_layer_fails_closed(
    governed: tuple[Workspace, Path], tamper: object, code: FindingCode
) -> None:
    _, packet = governed
    tamper(packet)  # type: ignore[operator]
    report = check_packet(packet)
    assert not report.ok
    assert report.findings[0].code is code


def test_a_layer_moved_onto_other_evidence_is_refused(
    governed: tuple[Workspace, Path],
) -> None:
    ws, packet = governed
    assert ws.rehearse(out="packets/other").code == 0  # another (ungoverned) packet
    other = ws.dir / "packets" / "other"
    shutil.copytree(packet / "governance", other / "governance")
    shutil.copy(packet / GOVERNANCE_SEAL, other / GOVERNANCE_SEAL)
    report = check_packet(other)
    assert report.findings[0].code is FindingCode.GOVERNANCE_MISMATCH


def test_tree_hash_recipe_and_rerun_still_work_beside_the_layer(
    governed: tuple[Workspace, Path],
) -> None:
    _, packet = governed
    recipe = (
        "find . -type f ! -path ./MANIFEST.json ! -path ./TREE_HASH ! -path ./attestation.dsse.json"
        " ! -path ./GOVERNANCE.json ! -path './governance/*'"
        " | sed 's|^\\./||' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum | cut -d' ' -f1"
    )
    out = subprocess.run(
        ["sh", "-c", recipe], cwd=packet, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == (packet / "TREE_HASH").read_text().strip()
    rerun = subprocess.run(
        ["bash", str(packet / "RERUN.sh")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "PASS/MATCH" in rerun.stdout


def test_demo_governed_runs_as_a_user_would(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "rollproof", "demo", "--governed", "--dir", str(workdir)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "status: ADD_ORDER_PRIORITY_REHEARSAL_ONLY_ROLLBACK_READY" in out
    assert "Final status: ADD_ORDER_PRIORITY_REHEARSAL_ONLY_ROLLBACK_READY" in out
    assert "decision HOLD for add-order-priority, signed" in out
    assert "APPLY_NOW=NO" in out
    assert "commands.sh: OVERALL PASS (exit 0)" in out
    assert "RERUN.sh: PASS/MATCH (exit 0)" in out
    err = proc.stderr
    assert "grant refused (replay)" in err
    assert "is the executor's key; only an operator signs grants" in err
    for lane in ("production-shaped-clone", "production-apply"):
        assert f"lane {lane} refused: needs its own operator grant" in err
    assert "lane cutover refused:" in err
    assert "lane production-apply has no consumed grant" in err
    assert out.rstrip().endswith(f"refused without its own grant. Everything is in {workdir}.")
    # The files it leaves are the real thing: a governed, valid, signed packet and a ledger.
    packet = workdir / "packets" / "add-order-priority"
    report = check_packet(packet, require_signature=False)
    assert report.ok
    state = json.loads((workdir / ".rollproof" / "status" / "current-state.json").read_text())
    [change] = state["changes"]
    assert (change["change_id"], change["hold"]) == ("add-order-priority", "HOLD")
