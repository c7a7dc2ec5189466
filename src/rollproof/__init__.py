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

from rollproof.core.version import __version__

if TYPE_CHECKING:
    from rollproof.core.change import Change, load_change
    from rollproof.core.errors import ExitCode, RollproofError
    from rollproof.core.policy import Policy, load_policy
    from rollproof.engines.postgres.source import fingerprint_source
    from rollproof.engines.sqlite.source import fingerprint_file
    from rollproof.governance.flow import enter_lane, governed_rehearse
    from rollproof.governance.preflight import run_preflight
    from rollproof.rehearse.flow import RehearsalResult, rehearse
    from rollproof.rehearse.packet import build_packet, write_packet
    from rollproof.rehearse.rerun import RerunOutcome, RerunResult, rerun_packet
    from rollproof.verify.findings import (
        Finding,
        FindingCode,
        PacketInvalidError,
        ValidationReport,
        VerifiedPacket,
    )
    from rollproof.verify.pin import validator_sha256
    from rollproof.verify.reader import check_packet, validate_packet

_HOME = {
    "Change": "rollproof.core.change",
    "ExitCode": "rollproof.core.errors",
    "Finding": "rollproof.verify.findings",
    "FindingCode": "rollproof.verify.findings",
    "PacketInvalidError": "rollproof.verify.findings",
    "RehearsalResult": "rollproof.rehearse.flow",
    "RerunOutcome": "rollproof.rehearse.rerun",
    "RerunResult": "rollproof.rehearse.rerun",
    "RollproofError": "rollproof.core.errors",
    "ValidationReport": "rollproof.verify.findings",
    "VerifiedPacket": "rollproof.verify.findings",
    "Policy": "rollproof.core.policy",
    "build_packet": "rollproof.rehearse.packet",
    "enter_lane": "rollproof.governance.flow",
    "fingerprint_file": "rollproof.engines.sqlite.source",
    "fingerprint_source": "rollproof.engines.postgres.source",
    "governed_rehearse": "rollproof.governance.flow",
    "load_policy": "rollproof.core.policy",
    "run_preflight": "rollproof.governance.preflight",
    "check_packet": "rollproof.verify.reader",
    "load_change": "rollproof.core.change",
    "rehearse": "rollproof.rehearse.flow",
    "rerun_packet": "rollproof.rehearse.rerun",
    "validate_packet": "rollproof.verify.reader",
    "validator_sha256": "rollproof.verify.pin",
    "write_packet": "rollproof.rehearse.packet",
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
