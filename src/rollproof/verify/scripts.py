"""The packet's two shell scripts, rendered from the packet's own JSON: commands.sh and RERUN.sh.

Pure: the writer renders them from the report and exit codes it writes, and the validator
renders them again from the files it verified and requires the same bytes. A packet's scripts
are meant to be run by whoever reviews it, so a script that differs by one byte from what
rollproof writes for that report (an added `curl | sh`, a changed expected verdict) is rejected.

Rules that keep the scripts safe to render from recorded data:
* every recorded value used as shell code is `shlex.quote`d, and every value shown in a comment
  is JSON-encoded (`ensure_ascii`), so a newline in a recorded value cannot end a comment and
  become code; no here-document is used (a recorded line equal to its delimiter would end it);
  the JSON Schemas also confine every such value to an anchored pattern, so this is the second
  of two walls (a property test feeds arbitrary strings through both renderers);
* the scripts locate rollproof the same way: `$ROLLPROOF` if set (split on whitespace, e.g.
  `ROLLPROOF="python3 -m rollproof"`), else `rollproof` on PATH, else `python3 -m rollproof` when
  python3 can import it; otherwise they exit 4 (environment) with one line on stderr.

commands.sh re-runs the rehearsal with every option that changes a verdict, taken from the
report: the legs, `--allow-undeclared`, and `--policy` with the policy file's recorded path.

commands.sh decides OVERALL PASS when, and only when: the rehearse step exits with the recorded
exit code; `rollproof validate --verdicts` accepts the reproduced packet (exit 0); and the
verdict lines it prints (change id and content id, isolation, each leg, overall, exit code) are
identical to the recorded ones. A change whose recorded verdict is FAIL reproduces as FAIL, and
that is a PASS of commands.sh: it reproduced the evidence, not a wish.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

FORMAT = 1
_LOCATE = """\
if [ -n "${ROLLPROOF:-}" ]; then
  read -r -a rollproof <<< "$ROLLPROOF"
elif command -v rollproof > /dev/null 2>&1; then
  rollproof=(rollproof)
elif command -v python3 > /dev/null 2>&1 && python3 -c 'import rollproof' > /dev/null 2>&1; then
  rollproof=(python3 -m rollproof)
else
  echo "$(basename "$0"): rollproof not found: put it on PATH, or set ROLLPROOF" \\
    "(e.g. ROLLPROOF='python3 -m rollproof')" >&2
  exit 4
fi
"""


_LIBPQ_ENV = (
    "# libpq's own environment applies to the source and the scratch server as it does to",
    "# any PostgreSQL client: PGPASSWORD, PGPASSFILE (~/.pgpass), PGSERVICE, PGSERVICEFILE,",
    "# PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY (the recorded DSNs carry no password).",
)


def _libpq_lines(report: Mapping[str, Any]) -> list[str]:
    """The variables a PostgreSQL packet's scripts honour, said in its scripts' comments."""
    return list(_LIBPQ_ENV) if report["source"].get("engine") == "postgresql" else []


def _dump_lines(report: Mapping[str, Any]) -> list[str]:
    """A dump packet's scripts say which dump they need: the recorded source string names its
    sha256, and a rehearsal refuses a dump that hashes otherwise."""
    dump = report["source"].get("dump")
    if not isinstance(dump, Mapping):
        return []
    return [
        f"# dump:     {_comment(dump.get('format'))} sha256 {_comment(dump.get('sha256'))}",
        "# The source is that dump (its path ends in #sha256=…): a dump that hashes otherwise",
        "# is refused (exit 2) before anything is restored.",
    ]


def _comment(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)


def recorded_exit_code(exit_codes: Mapping[str, Any]) -> int:
    """The recorded exit code of the rehearse command."""
    return int(next(c["exit_code"] for c in exit_codes["commands"] if c["name"] == "rehearse"))


def verdict_lines(report: Mapping[str, Any], exit_code: int) -> list[str]:
    """The verdicts commands.sh compares: what a reproduction must give again."""
    change = report["change"]
    lines = [
        f"change {change['id']} {change['content_id']}",
        f"isolation {report['isolation']['verdict']}",
    ]
    lines += [f"leg {leg['name']} {leg['verdict']}" for leg in report["legs"]]
    lines += [f"overall {report['overall']}", f"exit_code {exit_code}"]
    return lines


def _header(title: str, report: Mapping[str, Any], extra: Sequence[str]) -> list[str]:
    change = report["change"]
    return [
        "#!/usr/bin/env bash",
        f"# {title} (format {FORMAT})",
        f"# written by rollproof {_comment(report['rollproof_version'])}",
        "#",
        f"# change:   {_comment(change['id'])} {_comment(change['content_id'])}",
        f"# source:   {_comment(report['source']['dsn'])}",
        *extra,
    ]


def render_commands(report: Mapping[str, Any], exit_codes: Mapping[str, Any]) -> bytes:
    """commands.sh: re-run the commands that produced the packet and compare the results."""
    change_id = str(report["change"]["id"])
    rc = recorded_exit_code(exit_codes)
    argv = next(c["argv"] for c in exit_codes["commands"] if c["name"] == "rehearse")
    legs = ",".join(str(leg["name"]) for leg in report["legs"])
    options = f" --legs {shlex.quote(legs)}"
    surfaces = report["surfaces"]
    if surfaces["allow_undeclared"]:
        options += " --allow-undeclared"
    if surfaces["policy"]["path"] is not None:
        options += f" --policy {shlex.quote(str(surfaces['policy']['path']))}"
    if report["source"].get("scratch") is not None:
        options += f" --scratch {shlex.quote(str(report['source']['scratch']))}"
    staged = f'"$out"/change/{shlex.quote(change_id)}'
    expected = verdict_lines(report, rc)
    lines = _header(
        "commands.sh: the rollproof commands that produced this evidence packet",
        report,
        [
            f"# recorded: {_comment(argv)} (secrets removed)",
            f"# step 1, rehearse: recorded exit code {rc}",
            "#",
            "# Usage: bash commands.sh [OUTPUT_DIR]",
            "# Re-runs each command into a fresh OUTPUT_DIR (default: a new",
            "# ./rollproof-reproduce.XXXXXX), rehearsing this packet's own change/ copy",
            "# against the recorded source; compares each command's exit code and the",
            "# reproduced verdicts with the recorded ones; writes every exit code to",
            "# OUTPUT_DIR/exit_codes.json; prints OVERALL PASS (exit 0) or names each",
            "# command that failed or differed (exit 1).",
            "# Environment: ROLLPROOF, how to run rollproof (default: rollproof on PATH,",
            "# else python3 -m rollproof); ROLLPROOF_SOURCE, a source DSN to use instead",
            "# of the recorded one (which has any password removed).",
            *_libpq_lines(report),
            *_dump_lines(report),
            "set -u",
            "",
            'packet="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)" || exit 2',
            _LOCATE.rstrip("\n"),
            'if [ "$#" -ge 1 ]; then',
            '  mkdir -- "$1" || { echo "commands.sh: $1 must be a new directory" >&2; exit 2; }',
            '  out="$(cd "$1" && pwd -P)" || exit 2',
            "else",
            '  out="$(mktemp -d "$PWD/rollproof-reproduce.XXXXXX")" || exit 2',
            "fi",
            f"recorded_source={shlex.quote(str(report['source']['dsn']))}",
            'source_dsn="${ROLLPROOF_SOURCE:-$recorded_source}"',
            "failed=()",
            "",
            "# The change is rehearsed from this packet's own copy, staged under its id (an id",
            "# left out of change.toml defaults to the directory's name).",
            f'mkdir -p {staged} && cp -R "$packet"/change/. {staged}/ || exit 2',
            "",
            f'echo "step 1: rollproof rehearse (recorded exit code {rc})"',
            f'"${{rollproof[@]}}" rehearse {staged} --source "$source_dsn" \\',
            f'  {options.strip()} --out "$out"/packet > "$out"/step-1.log 2>&1',
            "rc1=$?",
            f'[ "$rc1" -eq {rc} ] || failed+=("step 1, rehearse: exited $rc1, recorded {rc}'
            ' (see $out/step-1.log)")',
            "",
            'echo "step 2: rollproof validate --verdicts on the reproduced packet"',
            '"${rollproof[@]}" validate "$out"/packet --verdicts > "$out"/verdicts.txt \\',
            '  2> "$out"/step-2.log',
            "rc2=$?",
            '[ "$rc2" -eq 0 ] || failed+=("step 2, validate: exited $rc2, expected 0'
            ' (see $out/step-2.log)")',
            "printf '%s\\n' \\",
            *(f"  {shlex.quote(line)} \\" for line in expected),
            '  > "$out"/verdicts.expected',
            'if [ "$rc2" -eq 0 ] && ! diff -u "$out"/verdicts.expected "$out"/verdicts.txt \\',
            '  > "$out"/verdicts.diff; then',
            '  failed+=("reproduced verdicts differ from the recorded ones'
            ' (see $out/verdicts.diff)")',
            "fi",
            "",
            'printf \'{"commands":['
            '{"exit_code":%d,"expected":%d,"name":"rehearse","step":1},'
            '{"exit_code":%d,"expected":0,"name":"validate","step":2}],'
            '"schema":"rollproof/reproduce/v1"}\\n\' "$rc1" '
            f'{rc} "$rc2" > "$out"/exit_codes.json',
            "",
            'if [ "${#failed[@]}" -eq 0 ]; then',
            '  echo "OVERALL PASS: every command reproduced its recorded exit code and verdicts'
            ' ($out)"',
            "  exit 0",
            "fi",
            'for f in "${failed[@]}"; do echo "FAILED: $f"; done',
            'if [ -s "$out"/verdicts.diff ]; then cat "$out"/verdicts.diff; fi',
            'echo "OVERALL FAIL ($out)"',
            "exit 1",
        ],
    )
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_rerun(report: Mapping[str, Any]) -> bytes:
    """RERUN.sh: re-run the rehearsal from change/ and compare every fingerprint."""
    lines = _header(
        "RERUN.sh: re-run this packet's rehearsal and compare every fingerprint",
        report,
        [
            "#",
            "# Usage: bash RERUN.sh [--source DSN]",
            "# Validates this packet, re-runs its rehearsal from its own change/ copy against the",
            "# recorded source (or --source DSN) and compares every fingerprint with the recorded",
            "# one. Prints PASS/MATCH (exit 0), or names each fingerprint that does not match and",
            "# says whether the source drifted (its fingerprint, every leg's `before`, differs)",
            "# or the change is non-deterministic (only after-apply points differ) (exit 1).",
            "# Environment: ROLLPROOF, how to run rollproof (as for commands.sh).",
            *_libpq_lines(report),
            *_dump_lines(report),
            "set -u",
            "",
            'packet="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)" || exit 2',
            _LOCATE.rstrip("\n"),
            'exec "${rollproof[@]}" rerun "$packet" "$@"',
        ],
    )
    return ("\n".join(lines) + "\n").encode("utf-8")
