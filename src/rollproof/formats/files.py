"""Reading a project's files for a loader: bytes kept for the evidence packet, text checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rollproof.core.inputs import InputFileError, read_input
from rollproof.formats.model import FormatError, Sql
from rollproof.formats.scripts import bracket_note, strip_bracket


@dataclass
class Reader:
    """Reads files under `root` by relative POSIX path, keeping each file's bytes."""

    root: Path
    files: dict[str, bytes] = field(default_factory=dict)

    def shown(self, rel: str) -> str:
        return str(self.root / rel)

    def text(self, rel: str) -> str:
        try:
            body = read_input(self.root / rel)
        except InputFileError as e:
            raise FormatError(self.shown(rel), e.reason) from None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            line = body[: e.start].count(b"\n") + 1
            raise FormatError(self.shown(rel), "is not UTF-8 text", line) from None
        self.files[rel] = body
        return text

    def take(self) -> dict[str, bytes]:
        out, self.files = self.files, {}
        return out


def script(rel: str, text: str, notes: list[str], line: int = 1, end: int | None = None) -> Sql:
    """The SQL rollproof runs for `text` (lines `line`..`end` of `rel`, or all of it), a
    whole-script BEGIN/COMMIT left out and noted."""
    stripped = strip_bracket(text)
    if stripped is not None:
        notes.append(bracket_note(rel))
        text = stripped
    return Sql(path=rel, text=text, line=line, end=end, stripped=stripped is not None)


def has_code(text: str) -> bool:
    """True when `text` holds something other than whitespace and `--` comments."""
    return any(ln.strip() and not ln.strip().startswith("--") for ln in text.splitlines())
