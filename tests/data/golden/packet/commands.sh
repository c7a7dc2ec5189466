#!/usr/bin/env bash
# commands.sh: the rollproof commands that produced this evidence packet (format 1)
# written by rollproof "0.1.0"
#
# change:   "add-item-note" "sha256:40979e15d35575bc0662bdbf0141b5e1e20f3236b671e8aad94a98d190cfac1c"
# source:   "sqlite:////golden/source.db"
# recorded: ["rollproof", "rehearse", "changes/add-item-note", "--source", "sqlite:///source.db", "--sign", "golden.key"] (secrets removed)
# step 1, rehearse: recorded exit code 0
#
# Usage: bash commands.sh [OUTPUT_DIR]
# Re-runs each command into a fresh OUTPUT_DIR (default: a new
# ./rollproof-reproduce.XXXXXX), rehearsing this packet's own change/ copy
# against the recorded source; compares each command's exit code and the
# reproduced verdicts with the recorded ones; writes every exit code to
# OUTPUT_DIR/exit_codes.json; prints OVERALL PASS (exit 0) or names each
# command that failed or differed (exit 1).
# Environment: ROLLPROOF, how to run rollproof (default: rollproof on PATH,
# else python3 -m rollproof); ROLLPROOF_SOURCE, a source DSN to use instead
# of the recorded one (which has any password removed).
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
if [ "$#" -ge 1 ]; then
  mkdir -- "$1" || { echo "commands.sh: $1 must be a new directory" >&2; exit 2; }
  out="$(cd "$1" && pwd -P)" || exit 2
else
  out="$(mktemp -d "$PWD/rollproof-reproduce.XXXXXX")" || exit 2
fi
recorded_source=sqlite:////golden/source.db
source_dsn="${ROLLPROOF_SOURCE:-$recorded_source}"
failed=()

# The change is rehearsed from this packet's own copy, staged under its id (an id
# left out of change.toml defaults to the directory's name).
mkdir -p "$out"/change/add-item-note && cp -R "$packet"/change/. "$out"/change/add-item-note/ || exit 2

echo "step 1: rollproof rehearse (recorded exit code 0)"
"${rollproof[@]}" rehearse "$out"/change/add-item-note --source "$source_dsn" \
  --legs read-only,transaction,revert,restore --out "$out"/packet > "$out"/step-1.log 2>&1
rc1=$?
[ "$rc1" -eq 0 ] || failed+=("step 1, rehearse: exited $rc1, recorded 0 (see $out/step-1.log)")

echo "step 2: rollproof validate --verdicts on the reproduced packet"
"${rollproof[@]}" validate "$out"/packet --verdicts > "$out"/verdicts.txt \
  2> "$out"/step-2.log
rc2=$?
[ "$rc2" -eq 0 ] || failed+=("step 2, validate: exited $rc2, expected 0 (see $out/step-2.log)")
printf '%s\n' \
  'change add-item-note sha256:40979e15d35575bc0662bdbf0141b5e1e20f3236b671e8aad94a98d190cfac1c' \
  'isolation PROVEN_ISOLATED_NOT_PRODUCTION' \
  'leg read-only PASS' \
  'leg transaction PASS' \
  'leg revert PASS' \
  'leg restore PASS' \
  'overall PASS' \
  'exit_code 0' \
  > "$out"/verdicts.expected
if [ "$rc2" -eq 0 ] && ! diff -u "$out"/verdicts.expected "$out"/verdicts.txt \
  > "$out"/verdicts.diff; then
  failed+=("reproduced verdicts differ from the recorded ones (see $out/verdicts.diff)")
fi

printf '{"commands":[{"exit_code":%d,"expected":%d,"name":"rehearse","step":1},{"exit_code":%d,"expected":0,"name":"validate","step":2}],"schema":"rollproof/reproduce/v1"}\n' "$rc1" 0 "$rc2" > "$out"/exit_codes.json

if [ "${#failed[@]}" -eq 0 ]; then
  echo "OVERALL PASS: every command reproduced its recorded exit code and verdicts ($out)"
  exit 0
fi
for f in "${failed[@]}"; do echo "FAILED: $f"; done
if [ -s "$out"/verdicts.diff ]; then cat "$out"/verdicts.diff; fi
echo "OVERALL FAIL ($out)"
exit 1
