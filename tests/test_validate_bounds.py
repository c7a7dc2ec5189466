"""The validator is bounded: a 64 MiB adversarial packet is refused within 512 MiB of memory.

The packet is what an attacker without the key can make: the golden packet with report.json
replaced by one just under the 64 MiB file limit, its `legs` array holding millions of bad
entries, manifest and tree hash recomputed (bench/validate.py builds it). The validator runs in
a subprocess whose address space is capped with RLIMIT_AS, and must give the exact finding and
exit 1, not be killed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from validate import adversarial_packet  # type: ignore[import-not-found]  # noqa: E402

from rollproof.verify.findings import FindingCode  # noqa: E402

resource = pytest.importorskip("resource")

_CAPPED = """
import resource, sys
limit = 512 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from rollproof.cli import main
sys.exit(main(["validate", sys.argv[1]]))
"""


def _validate_capped(packet: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CAPPED, str(packet)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("size_mib", "code"),
    [
        pytest.param(63.9, FindingCode.LIMIT_EXCEEDED, id="64MiB-refused-before-parsing"),
        pytest.param(1, FindingCode.SCHEMA_VIOLATION, id="1MiB-parsed-first-errors-only"),
    ],
)
def test_adversarial_packet_is_refused_within_512_mib(
    size_mib: float, code: FindingCode, tmp_path: Path
) -> None:
    packet = adversarial_packet(tmp_path / "packet", size_mib)
    assert (packet / "report.json").stat().st_size <= 64 * 1024 * 1024
    run = _validate_capped(packet)
    assert run.returncode == 1, run.stderr[-2000:]
    first = next(line for line in run.stdout.splitlines() if line.startswith("INVALID"))
    assert first.split()[1] == str(code)
    assert len([x for x in run.stdout.splitlines() if x.startswith("INVALID")]) <= 20


def test_the_honest_packet_validates_under_the_same_cap(tmp_path: Path) -> None:
    """Positive twin: the cap is not what rejects."""
    run = _validate_capped(ROOT / "tests" / "data" / "golden" / "packet")
    assert run.returncode == 0, run.stdout + run.stderr
