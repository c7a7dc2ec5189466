"""commands.sh and RERUN.sh quote every recorded value: arbitrary strings cannot escape.

The schemas already confine every value that reaches a script to an anchored pattern; this is
the second wall. Arbitrary text (with shell metacharacters, quotes, newlines and command
substitutions mixed in) is put into every recorded field the renderers interpolate; `bash -n`
must accept the script, and running it (with rollproof replaced by `true`) must not run the
injected command, which would create a canary file.
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollproof.verify.scripts import render_commands, render_rerun
from tests.packet_fixtures import GOLDEN_DIR

REPORT = json.loads((GOLDEN_DIR / "report.json").read_bytes())
EXIT_CODES = json.loads((GOLDEN_DIR / "exit_codes.json").read_bytes())
CANARY = "rollproof-canary"
PAYLOADS = [
    f"\ntouch {CANARY} #",
    f"'; touch {CANARY}; '",
    f'"; touch {CANARY}; "',
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"\nROLLPROOF_EXPECTED\ntouch {CANARY}\n",
    f"\\\ntouch {CANARY}",
]
text = st.one_of(
    st.text(min_size=0, max_size=40).filter(lambda s: "\x00" not in s),
    st.sampled_from(PAYLOADS),
    st.tuples(st.text(max_size=10), st.sampled_from(PAYLOADS), st.text(max_size=10)).map(
        lambda t: "".join(t).replace("\x00", "")
    ),
)
FIELDS = ("version", "change_id", "content_id", "dsn", "scratch", "policy", "argv", "leg")


def _report(field: str, value: str) -> tuple[dict[str, Any], dict[str, Any]]:
    report, codes = copy.deepcopy(REPORT), copy.deepcopy(EXIT_CODES)
    if field == "version":
        report["rollproof_version"] = value
    elif field == "change_id":
        report["change"]["id"] = value
    elif field == "content_id":
        report["change"]["content_id"] = value
    elif field == "dsn":
        report["source"]["dsn"] = value
    elif field == "scratch":
        report["source"]["scratch"] = value
    elif field == "policy":
        report["surfaces"]["policy"]["path"] = value
    elif field == "argv":
        codes["commands"][0]["argv"].append(value)
    elif field == "leg":
        report["legs"][0]["name"] = value
        report["legs"][0]["verdict"] = value
    return report, codes


def _run(script: bytes, tmp: Path, name: str) -> None:
    path = tmp / name
    path.write_bytes(script)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    run = subprocess.run(
        ["bash", str(path), str(tmp / "out")] if name == "commands.sh" else ["bash", str(path)],
        cwd=tmp,
        env={"PATH": "/usr/bin:/bin", "ROLLPROOF": "true", "HOME": str(tmp)},
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert not (tmp / CANARY).exists(), run.stdout
    assert not (tmp / "out" / CANARY).exists()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(field=st.sampled_from(FIELDS), value=text)
def test_no_recorded_value_escapes_its_quoting(
    field: str, value: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("script")
    report, codes = _report(field, value)
    (tmp / "change").mkdir()
    _run(render_rerun(report), tmp, "RERUN.sh")
    _run(render_commands(report, codes), tmp, "commands.sh")


@pytest.mark.parametrize("payload", PAYLOADS)
def test_each_payload_is_inert_in_every_field(payload: str, tmp_path: Path) -> None:
    for field in FIELDS:
        tmp = tmp_path / field
        (tmp / "change").mkdir(parents=True)
        report, codes = _report(field, payload)
        _run(render_rerun(report), tmp, "RERUN.sh")
        _run(render_commands(report, codes), tmp, "commands.sh")


def test_the_canary_would_be_seen(tmp_path: Path) -> None:
    """Positive twin: an unquoted payload in a script does create the canary."""
    (tmp_path / "change").mkdir()
    script = render_rerun(REPORT).replace(
        b"set -u\n", f"set -u\n{shlex.join(['touch', CANARY])}\n".encode(), 1
    )
    path = tmp_path / "RERUN.sh"
    path.write_bytes(script)
    subprocess.run(
        ["bash", str(path)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "ROLLPROOF": "true"},
        capture_output=True,
        check=False,
    )
    assert (tmp_path / CANARY).exists()
