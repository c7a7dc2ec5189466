"""A recorded SQLite DSN names exactly the file that was rehearsed, through RERUN.sh and commands.sh.

A file named `p%41.db` used to be recorded as `sqlite:////…/p%41.db`, which decodes to `pA.db`:
RERUN.sh then blamed "source drifted" and commands.sh passed against the wrong database. A `?` in
a path made RERUN.sh refuse the DSN. The property covers every path name; the end-to-end rows
run the real scripts on sources whose directory and file names carry the characters a DSN
gives a meaning to.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollproof.assurance.selftest import SOUND_CHANGE, build_tiny_source, write_change
from rollproof.engines.sqlite.source import parse_sqlite_dsn, sqlite_dsn
from tests.test_packet_scripts import rehearse_cli, run_script

_SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=20,
).filter(lambda s: s not in {".", ".."})


@settings(max_examples=300, deadline=None)
@given(st.lists(_SEGMENT, min_size=1, max_size=4))
def test_a_path_survives_its_dsn(segments: list[str]) -> None:
    path = Path("/", *segments)
    dsn = sqlite_dsn(path)
    assert parse_sqlite_dsn(dsn) == path
    assert set(dsn) & {"?", "#", " "} == set()


def test_a_percent_escape_in_a_name_is_not_decoded() -> None:
    assert sqlite_dsn(Path("/data/p%41.db")) == "sqlite:////data/p%2541.db"
    assert parse_sqlite_dsn("sqlite:////data/p%2541.db") == Path("/data/p%41.db")


@pytest.mark.parametrize(
    ("directory", "name"),
    [
        pytest.param("plain", "source.db", id="control"),
        pytest.param("pct%41dir", "p%41.db", id="percent-escape"),
        pytest.param("why?", "a?b.db", id="question-mark"),
        pytest.param("hash#dir", "c#d.db", id="hash"),
        pytest.param("with space", "é ü.db", id="space-and-unicode"),
    ],
)
def test_rerun_and_commands_find_the_file_that_was_rehearsed(
    tmp_path: Path, directory: str, name: str
) -> None:
    (tmp_path / directory).mkdir()
    source = build_tiny_source(tmp_path / directory / name)
    before = source.read_bytes()
    # A decoy where the unescaped DSN would point: a different database.
    decoy = tmp_path / directory / name.replace("%41", "A")
    if decoy != source:
        build_tiny_source(decoy)
    change = write_change(tmp_path / "changes" / "add-item-note", SOUND_CHANGE)
    packet = tmp_path / "packet"
    assert rehearse_cli(change, str(source), packet) == 0
    rerun = run_script(packet / "RERUN.sh", tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "PASS/MATCH" in rerun.stdout
    commands = run_script(packet / "commands.sh", tmp_path)
    assert commands.returncode == 0, commands.stdout + commands.stderr
    assert "OVERALL PASS" in commands.stdout
    assert source.read_bytes() == before
