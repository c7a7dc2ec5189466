"""rollproof: prove a database change can be undone before it may run against production.

The public API. Names are imported on first use (PEP 562), so `import rollproof` (and the
CLI's start-up) does not pay for the rehearsal engine, JSON Schema and cryptography until a
command needs them.

    change = rollproof.load_change("changes/add-index")
    result = rollproof.rehearse(change, "sqlite:///prod.db")
    packet = rollproof.write_packet(result, Path("packet"))
    verified = rollproof.validate_packet(packet)          # raises PacketInvalidError
    report = rollproof.check_packet(packet)               # every finding, never raises on one
    rerun = rollproof.rerun_packet(packet)                # MATCH / SOURCE_DRIFTED / ...
    fp = rollproof.fingerprint_file(Path("prod.db"))      # or fingerprint_source("postgresql://…")
    outcome = rollproof.governed_rehearse(...)            # preflight, grant, rehearse, decide
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rollproof.change import Change, load_change
    from rollproof.engines.postgres import fingerprint_source
    from rollproof.engines.sqlite import fingerprint_file
    from rollproof.errors import ExitCode, RollproofError
    from rollproof.governance.flow import enter_lane, governed_rehearse
    from rollproof.governance.preflight import run_preflight
    from rollproof.packet.build import build_packet, write_packet
    from rollproof.packet.findings import (
        Finding,
        FindingCode,
        PacketInvalidError,
        ValidationReport,
        VerifiedPacket,
    )
    from rollproof.packet.pin import validator_sha256
    from rollproof.packet.reader import check_packet, validate_packet
    from rollproof.packet.rerun import RerunOutcome, RerunResult, rerun_packet
    from rollproof.policy import Policy, load_policy
    from rollproof.rehearsal import RehearsalResult, rehearse

_HOME = {
    "Change": "rollproof.change",
    "ExitCode": "rollproof.errors",
    "Finding": "rollproof.packet.findings",
    "FindingCode": "rollproof.packet.findings",
    "PacketInvalidError": "rollproof.packet.findings",
    "RehearsalResult": "rollproof.rehearsal",
    "RerunOutcome": "rollproof.packet.rerun",
    "RerunResult": "rollproof.packet.rerun",
    "RollproofError": "rollproof.errors",
    "ValidationReport": "rollproof.packet.findings",
    "VerifiedPacket": "rollproof.packet.findings",
    "Policy": "rollproof.policy",
    "build_packet": "rollproof.packet.build",
    "enter_lane": "rollproof.governance.flow",
    "fingerprint_file": "rollproof.engines.sqlite",
    "fingerprint_source": "rollproof.engines.postgres",
    "governed_rehearse": "rollproof.governance.flow",
    "load_policy": "rollproof.policy",
    "run_preflight": "rollproof.governance.preflight",
    "check_packet": "rollproof.packet.reader",
    "load_change": "rollproof.change",
    "rehearse": "rollproof.rehearsal",
    "rerun_packet": "rollproof.packet.rerun",
    "validate_packet": "rollproof.packet.reader",
    "validator_sha256": "rollproof.packet.pin",
    "write_packet": "rollproof.packet.build",
}

__all__ = [
    "Change",
    "ExitCode",
    "Finding",
    "FindingCode",
    "PacketInvalidError",
    "Policy",
    "RehearsalResult",
    "RerunOutcome",
    "RerunResult",
    "RollproofError",
    "ValidationReport",
    "VerifiedPacket",
    "__version__",
    "build_packet",
    "check_packet",
    "enter_lane",
    "fingerprint_file",
    "fingerprint_source",
    "governed_rehearse",
    "load_change",
    "load_policy",
    "rehearse",
    "rerun_packet",
    "run_preflight",
    "validate_packet",
    "validator_sha256",
    "write_packet",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'rollproof' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
