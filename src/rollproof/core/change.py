"""A change to rehearse, loaded from `change.toml`, and its content id.

A change is apply SQL, optional revert SQL, optional verify SQL, declared surfaces and the
per-connection settings that alter what SQL does. A change without `revert` is forward-only:
its revert leg is NOT_APPLICABLE and production can only be recovered by restoring a snapshot
(the transaction and restore legs still prove that recovery). Its content id is the sha256 of
its canonical form, which includes the sha256 of the exact bytes of every SQL script, so
editing a script (even a line ending) makes a different change, and so does editing an
`[impact]` limit: a change held to other limits is another change.

Invariants enforced at load time, each with an error that names the file and the key:
unknown keys are refused (a misspelt `strict_sequence` must not be silently ignored), every
value has its documented type, scripts live inside the change's directory (so the evidence
packet can copy them without following a path out), apply is not empty, and a revert that is
given is not empty either (omit it for a forward-only change).

`verify_expect` says what fails the verify script: "no-error" (the default, sqitch's rule: only
an error fails it, rows returned do not) or "no-rows" (a statement that returns any row fails
it too). The canonical form names it only when it is not the default, so every change written
before the key existed keeps its content id.

A script may be part of a file, as a migration tool runs it (rollproof.formats writes these):
`apply = {file = "x.sql", lines = [3, 9], strip_transaction = true}` is lines 3..9 of x.sql
without the BEGIN ... COMMIT that brackets them, and `transaction = false` (with
`transaction_marker` naming the tool's marker) says the tool runs the change outside a
transaction. So a format packet's change re-runs exactly the SQL rehearse-dir ran.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollproof.core.brackets import select_lines, strip_bracket
from rollproof.core.canonical import digest_json, sha256_hex
from rollproof.core.errors import ChangeError
from rollproof.core.impact import Limit, LimitError, limits_json, parse_limits
from rollproof.core.inputs import InputFileError, read_input
from rollproof.core.sqltext import has_sql

CHANGE_FILE = "change.toml"
MAX_CHANGE_TOML_BYTES = 1024 * 1024
"""change.toml is a short list of keys; a larger one is refused before it is parsed."""
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TOP_KEYS = frozenset(
    {
        "id",
        "apply",
        "apply_sql",
        "revert",
        "revert_sql",
        "verify",
        "verify_sql",
        "verify_expect",
        "no_mutation",
        "strict_sequences",
        "surfaces",
        "connection",
        "impact",
        "transaction",
        "transaction_marker",
    }
)
_SELECTION_KEYS = frozenset({"file", "lines", "strip_transaction"})
MAX_MARKER_CHARS = 200
_SURFACE_KEYS = frozenset({"reads", "writes"})
NO_REVERT = "no revert script: production can only be recovered by restore"
"""Why a forward-only change's revert (and reapply) leg is NOT_APPLICABLE: without a snapshot
the change is irreversible. The transaction and restore legs still prove recovery."""
VERIFY_NO_ERROR = "no-error"
"""The default: a verify statement fails only by raising an error (as in sqitch)."""
VERIFY_NO_ROWS = "no-rows"
"""A verify statement that returns at least one row fails as well."""
VERIFY_EXPECT_VALUES = (VERIFY_NO_ERROR, VERIFY_NO_ROWS)
CONNECTION_DEFAULTS: Mapping[str, bool] = {"foreign_keys": False, "recursive_triggers": False}
"""SQLite's own defaults; a change sets them explicitly to rehearse what its runner does."""


@dataclass(frozen=True, slots=True)
class Script:
    """One SQL script: its text, its bytes' digest, and the file it came from (None if inline)."""

    text: str
    sha256: str
    path: str | None
    lines: tuple[int, int] | None = None
    """`lines = [first, last]`: the script is these lines of its file (a migration tool's
    section); `sha256` is still the whole file's."""
    strip_transaction: bool = False
    """The script's whole-body BEGIN ... COMMIT is blanked: it runs in rollproof's own
    transaction (core.brackets)."""


@dataclass(frozen=True, slots=True)
class Change:
    id: str
    apply: Script
    revert: Script | None
    """None for a forward-only change (no revert script)."""
    verify: Script | None
    no_mutation: bool
    strict_sequences: bool
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    connection: Mapping[str, bool]
    directory: Path
    files: Mapping[str, bytes] = field(repr=False)
    """Relative path -> bytes of every file the change consists of (change.toml included)."""
    verify_expect: str = VERIFY_NO_ERROR
    """What fails the verify script: VERIFY_NO_ERROR (errors only) or VERIFY_NO_ROWS."""
    impact_limits: Mapping[Limit, int] = field(default_factory=dict)
    """`[impact]`: limits on the measured impact a production lane holds the change to
    (core.impact). Part of the content id when set, and recorded in report.json
    (`impact.limits.change`), from where the validator recomputes the id."""
    no_transaction: str | None = None
    """`transaction = false`: the marker by which the change's tool runs it outside a
    transaction (`transaction_marker`), and the transaction leg is NOT_APPLICABLE. In the
    content id as `"transaction": false` when set (the marker, only a name, is not): it
    changes which legs can fail, so a grant for the transactional change must not serve it."""

    @property
    def content_id(self) -> str:
        return digest_json(self.canonical_form())

    def canonical_form(self) -> dict[str, Any]:
        def script(s: Script | None) -> dict[str, Any] | None:
            if s is None:
                return None
            # A selection is named only when there is one, so older content ids stand.
            return (
                {"sha256": s.sha256, "path": s.path}
                | ({} if s.lines is None else {"lines": list(s.lines)})
                | ({"strip_transaction": True} if s.strip_transaction else {})
            )

        form: dict[str, Any] = {
            "id": self.id,
            "apply": script(self.apply),
            "revert": script(self.revert),
            "verify": script(self.verify),
            "no_mutation": self.no_mutation,
            "strict_sequences": self.strict_sequences,
            "surfaces": {"reads": sorted(self.reads), "writes": sorted(self.writes)},
            "connection": dict(sorted(self.connection.items())),
        }
        if self.verify_expect != VERIFY_NO_ERROR:
            form["verify_expect"] = self.verify_expect
        if self.impact_limits:
            # Other limits make another change (a grant for one must not serve the other);
            # named only when set, so a change without limits keeps its id.
            form["impact"] = limits_json(self.impact_limits)
        if self.no_transaction is not None:
            # It turns the transaction leg NOT_APPLICABLE: a grant for the transactional change
            # must not serve one whose failing transaction leg was re-worded away.
            form["transaction"] = False
        return form


def load_change(path: str | Path) -> Change:
    """Load a change from a directory holding `change.toml`, or from the file itself."""
    p = Path(path)
    toml_path = p / CHANGE_FILE if p.is_dir() else p
    shown = str(toml_path)
    try:
        raw = read_input(toml_path, limit=MAX_CHANGE_TOML_BYTES)
    except InputFileError as e:
        raise ChangeError(shown, e.reason) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ChangeError(shown, "not UTF-8 text") from e
    except tomllib.TOMLDecodeError as e:
        raise ChangeError(shown, f"invalid TOML: {e}") from e
    except RecursionError:
        # tomllib recurses once per nesting level: 50k nested arrays exhaust the stack.
        raise ChangeError(shown, "invalid TOML: nested too deeply") from None
    return _build(data, toml_path, raw)


def _build(data: dict[str, Any], toml_path: Path, raw: bytes) -> Change:
    shown = str(toml_path)
    directory = toml_path.parent.resolve()
    for key in sorted(set(data) - _TOP_KEYS):
        raise ChangeError(shown, "unknown key", key)

    change_id = data.get("id", directory.name)
    if not isinstance(change_id, str) or not _ID_RE.match(change_id):
        raise ChangeError(
            shown, "must be 1-128 letters, digits, '.', '_' or '-', starting alphanumeric", "id"
        )

    files: dict[str, bytes] = {CHANGE_FILE: raw}
    apply = _script(data, "apply", toml_path, directory, files, required=True)
    revert = _script(data, "revert", toml_path, directory, files, required=False)
    verify = _script(data, "verify", toml_path, directory, files, required=False)
    assert apply is not None
    no_mutation = _flag(data, "no_mutation", shown)
    if revert is not None and not no_mutation and not has_sql(revert.text):
        key = "revert" if revert.path else "revert_sql"
        raise ChangeError(
            shown,
            "is empty: only a no_mutation change may have no revert SQL "
            "(omit it for a forward-only change, recovered by restore only)",
            key,
        )

    surfaces = data.get("surfaces", {})
    if not isinstance(surfaces, dict):
        raise ChangeError(shown, "must be a table", "surfaces")
    for key in sorted(set(surfaces) - _SURFACE_KEYS):
        raise ChangeError(shown, "unknown key", f"surfaces.{key}")
    reads = _names(surfaces, "reads", shown)
    writes = _names(surfaces, "writes", shown)

    conn = data.get("connection", {})
    if not isinstance(conn, dict):
        raise ChangeError(shown, "must be a table", "connection")
    settings = dict(CONNECTION_DEFAULTS)
    for key, value in conn.items():
        if key not in CONNECTION_DEFAULTS:
            raise ChangeError(shown, "unknown key", f"connection.{key}")
        if not isinstance(value, bool):
            raise ChangeError(shown, "must be true or false", f"connection.{key}")
        settings[key] = value

    return Change(
        id=change_id,
        apply=apply,
        revert=revert,
        verify=verify,
        no_mutation=no_mutation,
        strict_sequences=_flag(data, "strict_sequences", shown),
        reads=reads,
        writes=writes,
        connection=settings,
        directory=directory,
        files=files,
        verify_expect=_verify_expect(data, shown, has_verify=verify is not None),
        impact_limits=_impact_limits(data, shown),
        no_transaction=_transaction(data, shown),
    )


def _transaction(data: Mapping[str, Any], shown: str) -> str | None:
    """The non-transactional marker (`transaction = false`), or None."""
    value = data.get("transaction", True)
    if not isinstance(value, bool):
        raise ChangeError(shown, "must be true or false", "transaction")
    marker = data.get("transaction_marker")
    if marker is not None:
        if value:
            raise ChangeError(shown, "is given but transaction is not false", "transaction_marker")
        if not isinstance(marker, str) or not marker.strip() or len(marker) > MAX_MARKER_CHARS:
            raise ChangeError(
                shown, f"must be a text of 1-{MAX_MARKER_CHARS} characters", "transaction_marker"
            )
    if value:
        return None
    return marker or "change.toml `transaction = false`"


def _selection(spec: Mapping[str, Any], shown: str, key: str) -> tuple[Any, Any, bool]:
    """(file, lines, strip_transaction) of `key = {file = ..., lines = [a, b], ...}`."""
    for unknown in sorted(set(spec) - _SELECTION_KEYS):
        raise ChangeError(shown, "unknown key", f"{key}.{unknown}")
    if "file" not in spec:
        raise ChangeError(shown, "missing: the file the script is part of", f"{key}.file")
    lines = spec.get("lines")
    if lines is not None:
        if (
            not isinstance(lines, list)
            or len(lines) != 2
            or not all(type(n) is int for n in lines)
            or not 1 <= lines[0] <= lines[1]
        ):
            raise ChangeError(
                shown, "must be [first, last]: line numbers, 1 <= first <= last", f"{key}.lines"
            )
        lines = (lines[0], lines[1])
    strip = spec.get("strip_transaction", False)
    if not isinstance(strip, bool):
        raise ChangeError(shown, "must be true or false", f"{key}.strip_transaction")
    return spec["file"], lines, strip


def _impact_limits(data: Mapping[str, Any], shown: str) -> dict[Limit, int]:
    if "impact" not in data:
        return {}
    try:
        return parse_limits(data["impact"])
    except LimitError as e:
        raise ChangeError(shown, e.message, e.key) from None


def _verify_expect(data: Mapping[str, Any], shown: str, *, has_verify: bool) -> str:
    """`verify_expect`, refused when unknown, or "no-rows" with no verify script to hold to it
    (a check asked for that would never run)."""
    value = data.get("verify_expect", VERIFY_NO_ERROR)
    if value not in VERIFY_EXPECT_VALUES:
        given = f", not {value!r}" if isinstance(value, str) and len(value) <= 40 else ""
        raise ChangeError(
            shown, f'must be "{VERIFY_NO_ERROR}" or "{VERIFY_NO_ROWS}"{given}', "verify_expect"
        )
    if value == VERIFY_NO_ROWS and not has_verify:
        raise ChangeError(
            shown,
            'is "no-rows" but the change has no verify script (verify or verify_sql)',
            "verify_expect",
        )
    return str(value)


def no_rows_failure(found: Sequence[tuple[int, str, int]]) -> str:
    """Why a verify under `verify_expect = "no-rows"` failed: each (statement number, its
    shortened text, rows it returned). Counts only: the rows' values may be secret."""
    parts = [
        f"statement {i} `{text}` returned {rows:,} row{'' if rows == 1 else 's'}"
        for i, text, rows in found
    ]
    return "; ".join(parts) + f' (verify_expect = "{VERIFY_NO_ROWS}")'


def _flag(data: Mapping[str, Any], key: str, shown: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ChangeError(shown, "must be true or false", key)
    return value


def _names(table: Mapping[str, Any], key: str, shown: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ChangeError(shown, "must be a list of object names", f"surfaces.{key}")
    return tuple(value)


def _script(
    data: Mapping[str, Any],
    name: str,
    toml_path: Path,
    directory: Path,
    files: dict[str, bytes],
    *,
    required: bool,
) -> Script | None:
    shown = str(toml_path)
    file_key, inline_key = name, f"{name}_sql"
    if file_key in data and inline_key in data:
        raise ChangeError(shown, f"give either {file_key} or {inline_key}, not both", file_key)
    if inline_key in data:
        text = data[inline_key]
        if not isinstance(text, str):
            raise ChangeError(shown, "must be a string of SQL", inline_key)
        script = Script(text=text, sha256=sha256_hex(text.encode("utf-8")), path=None)
        key = inline_key
    elif file_key in data:
        rel, lines, strip = data[file_key], None, False
        if isinstance(rel, dict):
            rel, lines, strip = _selection(rel, shown, file_key)
        if not isinstance(rel, str) or not rel:
            raise ChangeError(shown, "must be a path relative to change.toml", file_key)
        target = (directory / rel).resolve()
        if Path(rel).is_absolute() or not target.is_relative_to(directory):
            raise ChangeError(shown, f"{rel!r} is outside the change directory", file_key)
        if not target.exists():
            raise ChangeError(shown, f"file {rel!r} does not exist", file_key)
        try:
            body = read_input(target)
        except InputFileError as e:
            raise ChangeError(shown, f"file {rel!r} {_reason(e)}", file_key) from None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ChangeError(shown, f"file {rel!r} is not UTF-8 text", file_key) from e
        rel_posix = target.relative_to(directory).as_posix()
        files[rel_posix] = body
        text = _selected(text, lines, strip, shown, file_key, rel)
        script = Script(
            text=text,
            sha256=sha256_hex(body),
            path=rel_posix,
            lines=lines,
            strip_transaction=strip,
        )
        key = file_key
    elif required:
        raise ChangeError(
            shown, f"missing: give {file_key} (a file) or {inline_key} (inline SQL)", file_key
        )
    else:
        return None
    if name == "apply" and not has_sql(script.text):
        raise ChangeError(shown, "is empty: it has no SQL statement", key)
    return script


def _selected(
    text: str, lines: tuple[int, int] | None, strip: bool, shown: str, key: str, rel: str
) -> str:
    """The text a selection names: the lines, then without the whole-script BEGIN/COMMIT."""
    if lines is not None:
        picked = select_lines(text, *lines)
        if picked is None:
            raise ChangeError(
                shown, f"file {rel!r} has no lines {lines[0]}..{lines[1]}", f"{key}.lines"
            )
        text = picked
    if strip:
        stripped = strip_bracket(text)
        if stripped is None:
            raise ChangeError(
                shown,
                "is true but the script is not one BEGIN ... COMMIT",
                f"{key}.strip_transaction",
            )
        text = stripped
    return text


def _reason(e: InputFileError) -> str:
    """`InputFileError.reason` as it reads after "file 'x.sql'"."""
    r = e.reason
    return r if r.startswith(("is ", "grew ")) else f"cannot be read: {r}"
