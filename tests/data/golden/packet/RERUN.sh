#!/usr/bin/env bash
# RERUN.sh: re-run this packet's rehearsal and compare every fingerprint (format 1)
# written by rollproof "0.1.0"
#
# change:   "add-item-note" "sha256:40979e15d35575bc0662bdbf0141b5e1e20f3236b671e8aad94a98d190cfac1c"
# source:   "sqlite:////golden/source.db"
#
# Usage: bash RERUN.sh [--source DSN]
# Validates this packet, re-runs its rehearsal from its own change/ copy against the
# recorded source (or --source DSN) and compares every fingerprint with the recorded
# one. Prints PASS/MATCH (exit 0), or names each fingerprint that does not match and
# says whether the source drifted (its fingerprint, every leg's `before`, differs)
# or the change is non-deterministic (only after-apply points differ) (exit 1).
# Environment: ROLLPROOF, how to run rollproof (as for commands.sh).
set -u

packet="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)" || exit 2
if [ -n "${ROLLPROOF:-}" ]; then
  read -r -a rollproof <<< "$ROLLPROOF"
elif command -v rollproof > /dev/null 2>&1; then
  rollproof=(rollproof)
elif command -v python3 > /dev/null 2>&1 && python3 -c 'import rollproof' > /dev/null 2>&1; then
  rollproof=(python3 -m rollproof)
else
  echo "$(basename "$0"): rollproof not found: put it on PATH, or set ROLLPROOF" \
    "(e.g. ROLLPROOF='python3 -m rollproof')" >&2
  exit 4
fi
exec "${rollproof[@]}" rerun "$packet" "$@"
