"""Time the validator on adversarial packets of a few sizes.

    python3 bench/validate.py [SIZE_MIB ...]      (default: 1 8 64)

Each packet is the golden packet (tests/data/golden/packet) with report.json replaced by a
report of SIZE_MIB whose `legs` array holds as many bad entries as fit, manifest and tree hash
recomputed: what an attacker without the key can hand the validator. Prints, per size, the
first finding, the wall time and the peak resident memory of a fresh validator process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden" / "packet"


def adversarial_packet(out: Path, size_mib: float) -> Path:
    """Write the golden packet with a `size_mib` report.json of bad legs into `out`."""
    from rollproof.verify.layout import REPORT_JSON, payload_of, seal

    files = {
        p.relative_to(GOLDEN).as_posix(): p.read_bytes() for p in GOLDEN.rglob("*") if p.is_file()
    }
    report = json.loads(files[REPORT_JSON])
    entry = b'{"name":"x"},'
    report.pop("legs")
    head = json.dumps(report).encode()
    n = int(size_mib * 1024 * 1024) // len(entry)
    body = b'{"legs": [' + entry * (n - 1) + b'{"name":"x"}], ' + head[1:]
    sealed = seal({**payload_of(files), REPORT_JSON: body})
    for rel, data in sealed.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return out


_RUN = """
import resource, sys, time
from rollproof.verify.reader import check_packet
t = time.perf_counter()
report = check_packet(sys.argv[1])
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(report.findings[0].code if report.findings else "VALID", f"{elapsed:.2f}", f"{peak:.0f}")
"""


def main(sizes: list[float]) -> None:
    print(f"{'size MiB':>8}  {'first finding':<20} {'seconds':>8} {'peak RSS MiB':>12}")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            packet = adversarial_packet(Path(tmp) / "packet", size)
            out = subprocess.run(
                [sys.executable, "-c", _RUN, str(packet)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            print(f"{size:>8g}  {out[0]:<20} {out[1]:>8} {out[2]:>12}")


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [1, 8, 64])
