"""The validator holds a packet's `[impact]` limits to its content id (issue 17).

A real rehearsal of a change with a limit; its packet is valid. The same packet with the
report's `impact.limits.change` edited (and the id left alone) is refused: the id no longer
digests the change that was rehearsed. Edited together with a recomputed id, it is still
refused, because the packet's change.toml says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rollproof.assurance.selftest import (
    SOUND_CHANGE,
    build_tiny_source,
    edit_report,
    write_change,
)
from rollproof.core.change import load_change
from rollproof.rehearse.flow import rehearse
from rollproof.rehearse.packet import build_packet
from rollproof.verify.findings import FindingCode
from rollproof.verify.recompute import recomputed_content_id
from rollproof.verify.validate import PacketTree, check_tree


def test_impact_limits_are_held_to_the_content_id(tmp_path: Path) -> None:
    source = build_tiny_source(tmp_path / "prod.db")
    files = dict(SOUND_CHANGE)
    files["change.toml"] += "\n[impact]\nmax_duration_ms = 600000\n"
    change = load_change(write_change(tmp_path / "change", files))
    assert change.canonical_form()["impact"] == {"max_duration_ms": 600000}
    packet = build_packet(rehearse(change, f"sqlite:///{source}"))
    assert check_tree(PacketTree.from_files(packet)).ok

    def loosen(report: dict[str, Any]) -> None:
        report["impact"]["limits"]["change"] = {"max_duration_ms": 900000}

    forged = check_tree(PacketTree.from_files(edit_report(packet, loosen)))
    assert not forged.ok
    assert [(f.code, f.message) for f in forged.findings][:1] == [
        (
            FindingCode.CONTENT_ID_MISMATCH,
            "change.content_id is not the digest of the recorded change",
        )
    ]

    def loosen_and_reid(report: dict[str, Any]) -> None:
        loosen(report)
        report["change"]["content_id"] = recomputed_content_id(
            report["change"], report["impact"]["limits"]["change"]
        )

    reid = check_tree(PacketTree.from_files(edit_report(packet, loosen_and_reid)))
    messages = [(f.code, f.message, f.path) for f in reid.findings]
    assert (
        FindingCode.CHANGE_COPY_MISMATCH,
        "[impact] is not the recorded impact.limits.change",
        "change/change.toml",
    ) in messages
