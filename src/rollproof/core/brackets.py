"""A script that brackets itself in one transaction, and the lines of a file a script is.

sqitch's convention is a script whose whole body is one `BEGIN; ... COMMIT;`. rollproof runs a
script inside its own transaction (the transaction leg), where a BEGIN would be an error, so the
pair is blanked out (line numbers survive) when a change says `strip_transaction = true`, as
the migration loaders (rollproof.formats) write it. `select_lines` is the `lines = [a, b]` of a
script: the section of a file (a dbmate or goose `up`) a migration tool runs.

Here in core, not in formats, because change.toml names both, and the validator re-reads it.
"""

from __future__ import annotations

import re

_BEGIN = re.compile(
    r"(?:BEGIN(?:\s+(?:DEFERRED|IMMEDIATE|EXCLUSIVE))?(?:\s+(?:TRANSACTION|WORK))?"
    r"|START\s+TRANSACTION)\s*;",
    re.I,
)
_COMMIT = re.compile(r"COMMIT(?:\s+(?:TRANSACTION|WORK))?\s*;?", re.I)
_CONTROL = re.compile(
    r"(?:^|;)\s*(BEGIN\s*;|BEGIN\s+(?:DEFERRED|IMMEDIATE|EXCLUSIVE|TRANSACTION|WORK)\b"
    r"|START\s+TRANSACTION|COMMIT|END\s+TRANSACTION|ROLLBACK)\b",
    re.I,
)


def _skip_leading(text: str, i: int) -> int:
    """Index of the first character at or after `i` that is not whitespace or a comment."""
    n = len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            break
    return i


def _code_end(text: str) -> int:
    """Index just past the last character that is not whitespace or a trailing `--` comment."""
    lines = text.split("\n")
    end = len(text)
    for line in reversed(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            return end - len(line) + len(line.rstrip())
        end -= len(line) + 1
    return 0


def _blank(text: str) -> str:
    """`text` with every character but newlines made a space (line numbers survive)."""
    return "".join("\n" if c == "\n" else " " for c in text)


def strip_bracket(text: str) -> str | None:
    """`text` without its BEGIN and COMMIT when the whole script is one BEGIN ... COMMIT, else
    None. A script with other transaction control between them is left as it is (the
    transaction leg then says the script manages its own transaction)."""
    start = _skip_leading(text, 0)
    begin = _BEGIN.match(text, start)
    if begin is None:
        return None
    end = _code_end(text)
    tail = text[begin.end() : end]
    last = None
    for m in re.finditer(r"COMMIT(?:\s+(?:TRANSACTION|WORK))?\s*;?", tail, re.I):
        last = m
    if last is None or last.end() != len(tail):
        return None
    # COMMIT must begin a statement: only whitespace or comments between it and the last `;`.
    before = tail[: last.start()]
    semi = before.rfind(";")
    if _skip_leading(before, semi + 1) != len(before):
        return None
    body = before
    if _CONTROL.search(body):
        return None
    commit_at = begin.end() + last.start()
    commit_end = begin.end() + last.end()
    return (
        text[:start]
        + _blank(text[start : begin.end()])
        + text[begin.end() : commit_at]
        + _blank(text[commit_at:commit_end])
        + text[commit_end:]
    )


def select_lines(text: str, first: int, last: int) -> str | None:
    """Lines `first`..`last` of `text` (1-based, inclusive, line ends kept, as str.splitlines
    splits them), or None when the file has no such lines."""
    lines = text.splitlines(keepends=True)
    if not 1 <= first <= last <= len(lines):
        return None
    return "".join(lines[first - 1 : last])
