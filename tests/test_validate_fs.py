"""The validator's IO shell on real directories: nothing is followed, odd files are refused,
limits hold before reading, unusable input is exit 2, and the CLI maps every outcome."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from rollproof.assurance.selftest import Corpus, build_corpus
from rollproof.cli import main
from rollproof.evidence.write import write_tree_atomically
from rollproof.verify.findings import FindingCode, PacketInvalidError, PacketUsageError
from rollproof.verify.layout import MANIFEST, REPORT_JSON, REPORT_MD, Limits, payload_of, seal
from rollproof.verify.reader import check_packet, read_packet_tree, validate_packet
from rollproof.verify.validate import FileKind


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def packet(corpus: Corpus, tmp_path: Path) -> Path:
    """A fresh on-disk copy of the sound packet."""
    return write_tree_atomically(tmp_path / "packet", corpus.sound)


def first_code(path: Path, **kw: object) -> FindingCode | None:
    report = check_packet(path, **kw)  # type: ignore[arg-type]
    return None if report.ok else report.findings[0].code


def no_hang(fn: object, *args: object) -> object:
    """Run `fn(*args)` in a thread and fail (rather than hang) if it blocks: a validator that
    opened a FIFO would wait for a writer forever."""
    box: list[object] = []
    t = threading.Thread(target=lambda: box.append(fn(*args)), daemon=True)  # type: ignore[operator]
    t.start()
    t.join(timeout=20)
    assert not t.is_alive(), "the validator blocked"
    return box[0]


def test_positive_twin(packet: Path) -> None:
    assert first_code(packet) is None
    assert validate_packet(packet).change_id == "add-item-note"


def test_symlinked_file_to_a_fifo_is_rejected_without_following(
    packet: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "outside.fifo"
    os.mkfifo(fifo)
    (packet / REPORT_MD).unlink()
    (packet / REPORT_MD).symlink_to(fifo)
    assert no_hang(first_code, packet) is FindingCode.SYMLINK


def test_symlinked_directory_is_not_entered(packet: Path, tmp_path: Path) -> None:
    outside = tmp_path / "fingerprints-elsewhere"
    shutil.move(packet / "fingerprints", outside)
    (packet / "fingerprints").symlink_to(outside, target_is_directory=True)
    tree = read_packet_tree(packet)
    assert tree.entries["fingerprints"].kind is FileKind.SYMLINK
    assert not any(p.startswith("fingerprints/") for p in tree.entries)
    assert first_code(packet) is FindingCode.FILE_MISSING


def test_dotdot_manifest_entry_is_never_opened(
    packet: Path, tmp_path: Path, corpus: Corpus
) -> None:
    """The manifest names ../outside.fifo; a validator that opened it would block."""
    os.mkfifo(tmp_path / "outside.fifo")
    sealed = seal({**payload_of(corpus.sound), "../outside.fifo": b""})
    (packet / MANIFEST).write_bytes(sealed[MANIFEST])
    (packet / "TREE_HASH").write_bytes(sealed["TREE_HASH"])
    assert no_hang(first_code, packet) is FindingCode.PATH_UNSAFE


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("Report.json", FindingCode.PATH_CASE_COLLISION, id="case-twin-of-report"),
        pytest.param("manifest.json", FindingCode.PATH_CASE_COLLISION, id="case-twin-of-manifest"),
        pytest.param("Change/apply.sql", FindingCode.PATH_CASE_COLLISION, id="case-twin-of-dir"),
        pytest.param("notes\\x.txt", FindingCode.PATH_UNSAFE, id="backslash"),
        pytest.param("bad\x1b[31m.txt", FindingCode.PATH_UNSAFE, id="escape-sequence"),
        pytest.param("caf\u00e9.txt", FindingCode.PATH_UNSAFE, id="non-ascii"),
    ],
)
def test_bad_names_listed_in_the_manifest(
    packet: Path, corpus: Corpus, name: str, expected: FindingCode
) -> None:
    (packet / name).parent.mkdir(parents=True, exist_ok=True)
    (packet / name).write_bytes(corpus.sound[REPORT_JSON])
    sealed = seal({**payload_of(corpus.sound), name: corpus.sound[REPORT_JSON]})
    (packet / MANIFEST).write_bytes(sealed[MANIFEST])
    (packet / "TREE_HASH").write_bytes(sealed["TREE_HASH"])
    assert first_code(packet) is expected


def test_case_colliding_file_not_in_manifest_is_extra(packet: Path) -> None:
    (packet / "Report.json").write_bytes((packet / REPORT_JSON).read_bytes())
    assert first_code(packet) is FindingCode.FILE_EXTRA


def test_hardlink_is_refused_and_not_read(packet: Path, tmp_path: Path) -> None:
    os.link(packet / REPORT_JSON, tmp_path / "other-name")
    tree = read_packet_tree(packet)
    assert tree.entries[REPORT_JSON].nlink == 2
    assert tree.entries[REPORT_JSON].data is None
    assert first_code(packet) is FindingCode.HARDLINK


def test_fifo_in_place_of_a_file(packet: Path) -> None:
    (packet / REPORT_MD).unlink()
    os.mkfifo(packet / REPORT_MD)
    assert no_hang(first_code, packet) is FindingCode.SPECIAL_FILE


def test_empty_extra_directory(packet: Path) -> None:
    (packet / "fingerprints" / "more").mkdir()
    assert first_code(packet) is FindingCode.FILE_EXTRA


def test_depth_limit_stops_the_walk_before_reading(packet: Path) -> None:
    deep = packet.joinpath(*["d"] * 12)
    deep.mkdir(parents=True)
    (deep / "x").write_bytes(b"x")
    tree = read_packet_tree(packet)
    assert tree.breach is not None
    assert all(e.data is None for e in tree.entries.values())
    assert first_code(packet) is FindingCode.LIMIT_EXCEEDED


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param(Limits(max_files=4), id="count"),
        pytest.param(Limits(max_file_bytes=64), id="file-size"),
        pytest.param(Limits(max_total_bytes=2048), id="total-size"),
    ],
)
def test_limits_before_reading(packet: Path, limits: Limits) -> None:
    tree = read_packet_tree(packet, limits=limits)
    assert tree.breach is not None
    assert all(e.data is None for e in tree.entries.values())
    assert first_code(packet, limits=limits) is FindingCode.LIMIT_EXCEEDED


def test_unusable_input(tmp_path: Path, packet: Path) -> None:
    with pytest.raises(PacketUsageError, match="no such packet directory"):
        check_packet(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PacketUsageError, match="not a directory"):
        check_packet(tmp_path / "file")
    (tmp_path / "link").symlink_to(packet)
    with pytest.raises(PacketUsageError, match="symlink"):
        check_packet(tmp_path / "link")


def test_validate_packet_raises_with_every_finding(packet: Path) -> None:
    (packet / "extra-1").write_text("x")
    (packet / "extra-2").write_text("y")
    with pytest.raises(PacketInvalidError) as info:
        validate_packet(packet)
    assert [f.code for f in info.value.findings] == [FindingCode.FILE_EXTRA] * 2
    assert info.value.exit_code == 1


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_valid_invalid_unusable(
    packet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(packet)]) == 0
    assert capsys.readouterr().out.startswith(f"VALID {packet}: add-item-note overall PASS")

    assert main(["validate", str(packet), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["valid"] is True
    assert body["findings"] == []

    (packet / "intruder").write_text("x")
    assert main(["validate", str(packet)]) == 1
    out = capsys.readouterr().out
    assert "INVALID FILE_EXTRA intruder: on disk but not listed" in out

    assert main(["validate", str(packet), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["findings"][0]["code"] == "FILE_EXTRA"

    assert main(["validate", str(tmp_path / "nowhere")]) == 2
    assert "no such packet directory" in capsys.readouterr().err
    assert main(["validate"]) == 2
    assert main(["validate", str(packet), "--require-signature"]) == 2
    assert "--trusted-key" in capsys.readouterr().err


def test_cli_refuses_a_key_that_is_not_a_key(packet: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("not a key\n")
    assert main(["validate", str(packet), "--trusted-key", str(bogus)]) == 2


def test_cli_verdicts(corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lossy = write_tree_atomically(tmp_path / "lossy", corpus.lossy)
    assert main(["validate", str(lossy), "--verdicts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("change drop-item-qty sha256:")
    assert lines[1:] == [
        "isolation PROVEN_ISOLATED_NOT_PRODUCTION",
        "leg read-only NOT_APPLICABLE",
        "leg transaction PASS",
        "leg revert FAIL",
        "leg restore PASS",
        "overall FAIL",
        "exit_code 1",
    ]


def test_findings_never_print_control_characters(
    packet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (packet / "evil\x1b]0;pwned\x07\x1b[2J").write_text("x")
    assert main(["validate", str(packet)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\\x1b" in out  # shown escaped
