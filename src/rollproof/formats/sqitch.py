"""sqitch: `sqitch.plan`, `sqitch.conf`, and deploy/revert/verify scripts.

The plan (sqitch's plan format, syntax version 1.0.0):

    %syntax-version=1.0.0
    %project=flipr
    users [appschema !legacy] 2024-01-02T10:00:00Z Ann <ann@example.com> # note
    @v1.0 2024-01-03T10:00:00Z Ann <ann@example.com> # tag
    users [users@v1.0] 2024-01-04T10:00:00Z Ann <ann@example.com> # reworked

A change named again after a tag is *reworked*: each earlier instance's scripts are named with
the first tag after it (`deploy/users@v1.0.sql`), the last instance's plainly (`deploy/users.sql`).
`sqitch.conf` (git-config syntax) may set `core.engine`, `core.top_dir`, `core.plan_file`,
`core.deploy_dir`, `core.revert_dir`, `core.verify_dir`, `core.extension` and
`engine.sqlite.registry` and `engine.pg.registry`.

Each change's id is the one sqitch records in its registry: the SHA-1 of the change's plan
entry as sqitch serialises it (project, uri, name, parent change, planner, date, dependencies,
note), so what a source has deployed is read by id, as sqitch itself reads it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from rollproof.formats.files import Reader, has_code, script
from rollproof.formats.model import FormatError, Migration, Project

PLAN = "sqitch.plan"
CONF = "sqitch.conf"
_NAME = r"[^\s:@#\[\]!\\/%]+"
_PRAGMA = re.compile(r"^%\s*([A-Za-z_][\w-]*)\s*(?:=\s*(.*?))?\s*$")
_CHANGE = re.compile(
    rf"^(?P<op>[+-]?)(?P<name>{_NAME})\s*"
    r"(?:\[(?P<deps>[^\]]*)\]\s*)?"
    r"(?P<date>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\s+"
    r"(?P<planner>[^<]*?)\s*<(?P<email>[^>]*)>"
    r"\s*(?:#\s?(?P<note>.*))?$"
)
_TAG = re.compile(
    rf"^@(?P<name>{_NAME})\s+"
    r"(?P<date>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\s+"
    r"(?P<planner>[^<]*?)\s*<(?P<email>[^>]*)>"
    r"\s*(?:#\s?(?P<note>.*))?$"
)
_DEP = re.compile(
    rf"^(?P<bang>!?)(?:(?P<project>{_NAME}):)?(?P<name>{_NAME})?(?:@(?P<tag>{_NAME}))?$"
)


@dataclass(frozen=True, slots=True)
class _Planned:
    name: str
    line: int
    requires: tuple[str, ...]
    conflicts: tuple[str, ...]
    note: str
    planner: str = ""
    date: str = ""


def read_conf(text: str, shown: str) -> dict[str, str]:
    """`sqitch.conf` as `section.key` -> value (git-config syntax; subsections as
    `engine.sqlite.target`)."""
    out: dict[str, str] = {}
    section: str | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        head = re.fullmatch(r'\[\s*([A-Za-z][\w.-]*)(?:\s+"([^"]*)")?\s*\]', line)
        if head:
            section = head.group(1).lower()
            if head.group(2) is not None:
                section += "." + head.group(2)
            continue
        kv = re.fullmatch(r"([A-Za-z][\w-]*)\s*(?:=\s*(.*))?", line)
        if kv is None or section is None:
            raise FormatError(shown, f"not a section or a key = value line: {line!r}", n)
        value = (kv.group(2) or "true").strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[f"{section}.{kv.group(1).lower()}"] = value
    return out


def _posix(rel: str) -> str:
    return PurePosixPath(rel).as_posix().lstrip("./") if rel not in ("", ".") else ""


def _join(*parts: str) -> str:
    return str(PurePosixPath(*[p for p in parts if p]))


def _deps(raw: str, shown: str, line: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    requires: list[str] = []
    conflicts: list[str] = []
    for dep in raw.split():
        m = _DEP.match(dep)
        if m is None or (m.group("name") is None and m.group("tag") is None):
            raise FormatError(shown, f"dependency {dep!r} is not [!][project:]change[@tag]", line)
        (conflicts if m.group("bang") else requires).append(dep.lstrip("!"))
    return tuple(requires), tuple(conflicts)


def parse_plan(text: str, shown: str) -> tuple[dict[str, str], list[_Planned | tuple[str, int]]]:
    """The plan's pragmas and its entries in order: changes, and tags as ("@tag", line)."""
    pragmas: dict[str, str] = {}
    entries: list[_Planned | tuple[str, int]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("%"):
            p = _PRAGMA.match(line)
            if p is None:
                raise FormatError(shown, f"not a pragma: {line!r}", n)
            pragmas[p.group(1)] = p.group(2) or ""
            continue
        if line.startswith("@"):
            t = _TAG.match(line)
            if t is None:
                raise FormatError(shown, "not a tag line: @tag date planner <email> [# note]", n)
            if any(isinstance(e, tuple) and e[0] == "@" + t.group("name") for e in entries):
                raise FormatError(shown, f"tag @{t.group('name')} is already in the plan", n)
            entries.append(("@" + t.group("name"), n))
            continue
        c = _CHANGE.match(line)
        if c is None:
            raise FormatError(
                shown, "not a change line: name [deps] date planner <email> [# note]", n
            )
        if c.group("op") == "-":
            raise FormatError(shown, "a '-' (revert) entry is not supported by rollproof", n)
        requires, conflicts = _deps(c.group("deps") or "", shown, n)
        planner = f"{c.group('planner').strip()} <{c.group('email')}>"
        entries.append(
            _Planned(
                c.group("name"),
                n,
                requires,
                conflicts,
                c.group("note") or "",
                planner,
                c.group("date"),
            )
        )
    version = pragmas.get("syntax-version")
    if version is not None and not version.startswith("1."):
        raise FormatError(shown, f"%syntax-version={version} is not 1.x", 1)
    if "project" not in pragmas:
        raise FormatError(shown, "has no %project pragma", 1)
    return pragmas, entries


def load(directory: Path) -> Project:
    root = directory
    reader = Reader(root)
    conf: dict[str, str] = {}
    if (root / CONF).exists():
        conf = read_conf(reader.text(CONF), reader.shown(CONF))
    top = _posix(conf.get("core.top_dir", ""))
    plan_rel = _posix(conf.get("core.plan_file", "")) or _join(top, PLAN)
    ext = conf.get("core.extension", "sql").lstrip(".")
    dirs = {
        kind: _posix(conf.get(f"core.{kind}_dir", "")) or _join(top, kind)
        for kind in ("deploy", "revert", "verify")
    }
    plan_shown = reader.shown(plan_rel)
    if not (root / plan_rel).is_file():
        raise FormatError(plan_shown, "no sqitch plan here")
    pragmas, entries = parse_plan(reader.text(plan_rel), plan_shown)
    reader.take()  # the plan is the project's, not one change's

    # Which instance of a reworked change each entry is: every instance but the last is named
    # with the first tag after it.
    last_at: dict[str, int] = {}
    for i, e in enumerate(entries):
        if isinstance(e, _Planned):
            last_at[e.name] = i
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, _Planned):
            continue
        if e.name in seen and not any(isinstance(x, tuple) for x in entries[seen[e.name] + 1 : i]):
            first = entries[seen[e.name]]
            assert isinstance(first, _Planned)
            raise FormatError(
                plan_shown,
                f"change {e.name!r} is planned again with no tag since line {first.line}: "
                "a reworked change needs a tag between",
                e.line,
            )
        seen[e.name] = i
    migrations: list[Migration] = []
    parent: str | None = None
    for i, e in enumerate(entries):
        if not isinstance(e, _Planned):
            continue
        _check_requires(e, entries[:i], pragmas["project"], plan_shown)
        stem = e.name
        if last_at[e.name] != i:
            tag = next(x for x in entries[i + 1 :] if isinstance(x, tuple))
            stem = f"{e.name}{tag[0]}"
        parent = change_sha1(e, pragmas, parent)
        migrations.append(_migration(reader, dirs, ext, stem, e, plan_shown, parent))
    return Project(
        format="sqitch",
        directory=str(directory),
        migrations=tuple(migrations),
        bookkeeping="changes",
        engine=conf.get("core.engine") or pragmas.get("engine"),
        options={
            "project": pragmas["project"],
            "registry": conf.get("engine.sqlite.registry", "sqitch"),
            "pg_registry": conf.get("engine.pg.registry", "sqitch"),
            "plan": plan_rel,
        },
    )


def _canonical_uri(uri: str) -> str:
    """The URI as sqitch's `URI->canonical` spells it, for the common cases: scheme and host
    lower-cased, a default port dropped, an empty path of a URL with a host made `/`."""
    parts = urlsplit(uri)
    if not parts.scheme:
        return uri
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    if parts.hostname is not None:
        host = parts.hostname
        userinfo = netloc.rpartition("@")[0] + "@" if "@" in netloc else ""
        default = {"http": 80, "https": 443}.get(scheme)
        port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
        netloc = f"{userinfo}{host}{port}"
    path = parts.path or ("/" if netloc else "")
    return urlunsplit((scheme, netloc, path, parts.query, parts.fragment))


def _dep_string(dep: str, project: str) -> str:
    """A dependency as sqitch writes it into a change's id: without this project's prefix."""
    m = _DEP.match(dep)
    if m is not None and m.group("project") == project:
        return dep.split(":", 1)[1]
    return dep


_UNESCAPE = {"\\\\": "\\", "\\n": "\n", "\\r": "\r"}


def _unescape_note(raw: str) -> str:
    """The note as sqitch keeps it: trimmed, `\\\\`, `\\n` and `\\r` unescaped."""
    return re.sub(r"\\[\\nr]", lambda m: _UNESCAPE[m.group()], raw.strip())


def change_sha1(e: _Planned, pragmas: dict[str, str], parent: str | None) -> str:
    """The id sqitch gives the change: SHA-1 over `change <length>\\0<info>` (App::Sqitch's
    Plan::Change `info`), with the previous change in the plan as the parent."""
    project = pragmas["project"]
    lines = [f"project {project}"]
    if pragmas.get("uri"):
        lines.append(f"uri {_canonical_uri(pragmas['uri'])}")
    lines.append(f"change {e.name}")
    if parent is not None:
        lines.append(f"parent {parent}")
    lines += [f"planner {e.planner}", f"date {e.date}"]
    if e.requires:
        lines.append("requires\n  + " + "\n  + ".join(_dep_string(d, project) for d in e.requires))
    if e.conflicts:
        lines.append(
            "conflicts\n  - " + "\n  - ".join(_dep_string(d, project) for d in e.conflicts)
        )
    note = _unescape_note(e.note)
    if note:
        lines += ["", note]
    content = "\n".join(lines).encode("utf-8")
    return hashlib.sha1(  # noqa: S324 - sqitch's own id function, not a security boundary
        b"change " + str(len(content)).encode() + b"\0" + content
    ).hexdigest()


def _migration(
    reader: Reader,
    dirs: dict[str, str],
    ext: str,
    stem: str,
    e: _Planned,
    plan_shown: str,
    sha1: str,
) -> Migration:
    notes: list[str] = []
    rel = {kind: _join(d, f"{stem}.{ext}") for kind, d in dirs.items()}
    if not (reader.root / rel["deploy"]).is_file():
        raise FormatError(
            plan_shown, f"change {stem!r} has no deploy script {rel['deploy']}", e.line
        )
    apply_text = reader.text(rel["deploy"])
    if not has_code(apply_text):
        raise FormatError(reader.shown(rel["deploy"]), "has no SQL statement", 1)
    apply = script(rel["deploy"], apply_text, notes)
    revert = verify = None
    if (reader.root / rel["revert"]).is_file():
        text = reader.text(rel["revert"])
        if has_code(text):
            revert = script(rel["revert"], text, notes)
    if (reader.root / rel["verify"]).is_file():
        text = reader.text(rel["verify"])
        if has_code(text):
            verify = script(rel["verify"], text, notes)
    return Migration(
        id=stem,
        name=e.note or stem,
        apply=apply,
        revert=revert,
        verify=verify,
        requires=e.requires,
        conflicts=e.conflicts,
        version=sha1,
        irreversible=None if revert is not None else f"no {rel['revert']}",
        notes=tuple(notes),
        files=reader.take(),
    )


def _check_requires(
    e: _Planned, earlier: list[_Planned | tuple[str, int]], project: str, shown: str
) -> None:
    """A required change of this project must come earlier in the plan (as sqitch checks)."""
    names = {x.name for x in earlier if isinstance(x, _Planned)}
    tags = {x[0][1:] for x in earlier if isinstance(x, tuple)}
    for dep in e.requires:
        m = _DEP.match(dep)
        assert m is not None
        if m.group("project") not in (None, project):
            continue  # another project's change: not in this plan
        name, tag = m.group("name"), m.group("tag")
        if name is not None and name not in names:
            raise FormatError(
                shown, f"change {e.name!r} requires {dep!r}, not planned before it", e.line
            )
        if tag is not None and tag not in tags:
            raise FormatError(
                shown, f"change {e.name!r} requires {dep!r}: no tag @{tag} before it", e.line
            )
