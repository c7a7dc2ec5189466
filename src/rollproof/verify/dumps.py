"""A dump source's record in report.json, checked: what it claims and the check set it owes.

A packet rehearsed from a dump (`core/dumps.py`) records `source.dump` (format, sha256, lane)
and a source string that names the same digest (`pgdump:PATH#sha256=HEX`), which is what
commands.sh and RERUN.sh rehearse again. Pure; each rule stops a fabrication:

* a `pgdump:`/`sqlitedump:` source string without a dump record, or a dump record on another
  source string, a digest that differs between the two, or a format of another engine: a
  packet that says it came from one input and reproduces from another;
* a SQLite dump whose `bytes_sha256_before` is not exactly `{file name: dump sha256}`: the
  bytes proven unchanged are not the dump's;
* the isolation checks are the dump kind's own set (`DUMP_ISOLATION_CHECKS`), not the live
  engine's: a dump cannot claim a source server was compared, and a live source cannot
  leave out the checks only a dump may skip (recompute.py compares them).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from rollproof.core.dumps import (
    DUMP_LANE,
    ENGINES,
    FORMATS,
    SQLITEDUMP,
    dump_scheme,
    parse_dump_dsn,
)
from rollproof.core.errors import SourceError
from rollproof.core.isolation import expected_checks
from rollproof.verify.findings import Finding, FindingCode


def dump_scheme_of(source: Mapping[str, Any]) -> str | None:
    """The dump scheme a report's source records (by its format), or None for a live source."""
    dump = source.get("dump")
    if not isinstance(dump, Mapping):
        return None
    return next((s for s, formats in FORMATS.items() if dump.get("format") in formats), None)


def checks_owed(source: Mapping[str, Any]) -> tuple[str, tuple[str, ...] | None]:
    """(who owes them, the isolation checks) for a report's source."""
    scheme = dump_scheme_of(source)
    if scheme is not None:
        return f"{scheme} source", expected_checks(str(source["engine"]), scheme)
    return f"{source['engine']} engine", expected_checks(str(source["engine"]))


def check_dump_source(report: Mapping[str, Any]) -> list[Finding]:
    source = report["source"]
    dsn = str(source["dsn"])
    dump = source.get("dump")
    named = dump_scheme(dsn)
    if dump is None:
        if named is None:
            return []
        return [_finding(f"source.dsn names a {named} dump but source.dump records none")]
    scheme = dump_scheme_of(source)
    problems = []
    if scheme is None or ENGINES[scheme] != source["engine"]:
        problems.append(f"a {dump['format']} dump is not a {source['engine']} source")
    try:
        parsed = parse_dump_dsn(dsn)
    except SourceError:
        parsed = None
    if parsed is None or parsed.scheme != scheme or parsed.sha256 != dump["sha256"]:
        problems.append(
            f"source.dsn is not a {scheme} source string naming the dump's sha256 "
            f"(…#sha256={dump['sha256']})"
        )
    if dump["lane"] != DUMP_LANE:
        problems.append(f"a dump serves lane {DUMP_LANE}, not {dump['lane']}")
    if scheme == SQLITEDUMP and parsed is not None:
        path = str(source.get("path", ""))
        if path != parsed.path:
            problems.append("source.path is not the dump the source string names")
        if source.get("bytes_sha256_before") != {posixpath.basename(path): dump["sha256"]}:
            problems.append("the bytes proven unchanged (bytes_sha256_before) are not the dump's")
    return [_finding("; ".join(problems))] if problems else []


def _finding(message: str) -> Finding:
    return Finding(FindingCode.SOURCE_DUMP_MISMATCH, message, "report.json")
