"""What reaches a forbidden object with someone else's privileges, read from the clone's catalog.

A view or materialized view whose definition reads a forbidden table (directly, through other
views, or through a SECURITY DEFINER function), a SECURITY DEFINER function that reads it, a
table whose rules read it or whose SECURITY DEFINER triggers run such a function: each runs with
its owner's rights, so granting it to the change role would hand over the forbidden table.
`forbidden_reach` finds them by following pg_rewrite and pg_depend, and by reading the bodies
of PL/pgSQL and string-bodied SQL functions for names (they are not in pg_depend); a body that
builds SQL at run time, or a language rollproof cannot read, counts as reaching. It errs towards
denying: names are matched as words, not parsed. `roles.py` withholds every privilege on what
this returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import psycopg

from rollproof.core.guard import matches_any
from rollproof.core.surface import fold_name


def normalize(name: str) -> str:
    """Declared and reported names: lower case, without `public.` (or SQLite's `main.`)."""
    lowered = fold_name(name.strip())
    for prefix in ("public.", "main."):
        lowered = lowered.removeprefix(prefix)
    return lowered


DEPENDENTS = """
SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       tn.nspname, t.relname
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
UNION ALL
SELECT CASE WHEN n.nspname = 'public' THEN tg.tgname ELSE n.nspname || '.' || tg.tgname END,
       n.nspname, t.relname
FROM pg_catalog.pg_trigger tg
JOIN pg_catalog.pg_class t ON t.oid = tg.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE NOT tg.tgisinternal
"""


# --- what reaches a forbidden object with someone else's privileges -----------------------------

_REL_NODES = """
SELECT c.oid, CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       c.relkind,
       c.relkind = 'v' AND COALESCE((
           SELECT pg_catalog.lower(o.option_value) IN ('true', 'on', '1', 'yes')
           FROM pg_catalog.pg_options_to_table(c.reloptions) o
           WHERE o.option_name = 'security_invoker'), false)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""
_FUNC_NODES = """
SELECT p.oid, CASE WHEN n.nspname = 'public' THEN p.proname ELSE n.nspname || '.' || p.proname END,
       p.prosecdef, l.lanname, COALESCE(p.prosrc, ''), p.proowner,
       (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = p.proowner)
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE p.prokind <> 'a'
AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""
# Rule and function definitions' dependencies (a view's _RETURN rule, any other rule on a
# relation, a SQL function with a BEGIN ATOMIC body): the dependent, then what it depends on.
_RULE_EDGES = """
SELECT r.ev_class, r.rulename = '_RETURN', d.refclassid = 'pg_catalog.pg_proc'::regclass,
       d.refobjid
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
WHERE d.deptype = 'n'
  AND d.refclassid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_proc'::regclass)
  AND NOT (d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = r.ev_class)
"""
_FUNC_EDGES = """
SELECT d.objid, d.refclassid = 'pg_catalog.pg_proc'::regclass, d.refobjid
FROM pg_catalog.pg_depend d
WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'n'
  AND d.refclassid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_proc'::regclass)
"""
_TRIGGERS = """
SELECT tg.tgrelid, tg.tgfoid FROM pg_catalog.pg_trigger tg WHERE NOT tg.tgisinternal
"""
# Whether a role holds any privilege on a relation (a superuser holds every one).
_OWNER_REACH = """
SELECT pg_catalog.pg_has_role(%(owner)s, c.relowner, 'USAGE')
    OR pg_catalog.has_table_privilege(%(owner)s, c.oid,
                                      'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES')
    OR pg_catalog.has_any_column_privilege(%(owner)s, c.oid, 'SELECT, INSERT, UPDATE')
FROM pg_catalog.pg_class c WHERE c.oid = %(rel)s
"""
# Code that builds its SQL at run time, or is not SQL at all, may read any table its owner can.
_DYNAMIC = re.compile(
    r"\bexecute\b|query_to_xml|table_to_xml|cursor_to_xml|dblink|\bcopy\b|"
    r"query_to_xmlschema|lo_import|pg_read",
    re.IGNORECASE,
)
_PLAIN_LANGUAGES = frozenset({"sql", "plpgsql"})

Node = tuple[str, int]  # ("r", relation oid) or ("f", function oid)


def _mentions(body: str, name: str) -> bool:
    word = re.escape(name.rpartition(".")[2])
    return re.search(rf"(?<![\w$]){word}(?![\w$])", body, re.IGNORECASE) is not None


def forbidden_reach(conn: psycopg.Connection[Any], forbidden: Iterable[str]) -> dict[str, str]:
    """Every object through which a change run as its own role could reach a forbidden object
    with another role's privileges, mapped to the forbidden object it reaches.

    Dependencies come from the catalogs: a view's or materialized view's `_RETURN` rule and any
    other rule (pg_rewrite, pg_depend), a SQL function's BEGIN ATOMIC body (pg_depend), a
    table's triggers (pg_trigger). A function body the server does not track (PL/pgSQL, a SQL
    string body) is read for the names of forbidden and reaching objects, and counts as reaching
    every forbidden object when it builds SQL at run time or is not SQL. Only what runs with
    another role's rights counts: views without `security_invoker`, materialized views (their
    rows are the forbidden rows), SECURITY DEFINER functions whose owner holds a privilege on
    what they reach, and tables whose rules (run as the table's owner) or triggers (running a
    reaching SECURITY DEFINER function) do. The closure is transitive: a view over such a view,
    a function calling such a function.
    """
    patterns = tuple(forbidden)
    if not patterns:
        return {}
    rels: dict[int, tuple[str, str, bool]] = {}
    for oid, name, relkind, invoker in conn.execute(_REL_NODES).fetchall():
        rels[int(oid)] = (str(name), str(relkind), bool(invoker))
    funcs: dict[int, tuple[str, bool, str, str, int, bool]] = {}
    for oid, name, secdef, lang, body, owner, superuser in conn.execute(_FUNC_NODES).fetchall():
        funcs[int(oid)] = (
            str(name),
            bool(secdef),
            str(lang),
            str(body),
            int(owner),
            bool(superuser),
        )

    reach: dict[Node, str] = {}
    for oid, (name, _kind, _inv) in rels.items():
        if matches_any(name, patterns):
            reach[("r", oid)] = name
    for oid, (name, *_rest) in funcs.items():
        if matches_any(name, patterns):
            reach[("f", oid)] = name
    if not reach:
        return {}
    any_root = sorted(set(reach.values()))[0]

    rule_edges: dict[int, list[tuple[bool, Node]]] = {}
    for ev_class, is_return, to_func, ref in conn.execute(_RULE_EDGES).fetchall():
        rule_edges.setdefault(int(ev_class), []).append(
            (bool(is_return), ("f" if to_func else "r", int(ref)))
        )
    func_edges: dict[int, list[Node]] = {}
    for objid, to_func, ref in conn.execute(_FUNC_EDGES).fetchall():
        func_edges.setdefault(int(objid), []).append(("f" if to_func else "r", int(ref)))
    triggers: dict[int, list[int]] = {}
    for rel, fn in conn.execute(_TRIGGERS).fetchall():
        triggers.setdefault(int(rel), []).append(int(fn))

    owner_cache: dict[tuple[int, int], bool] = {}

    def owner_reaches(owner: int, superuser: bool) -> bool:
        if superuser:
            return True
        for node in list(reach):
            if node[0] != "r":
                continue
            key = (owner, node[1])
            if key not in owner_cache:
                row = conn.execute(_OWNER_REACH, {"owner": owner, "rel": node[1]}).fetchone()
                owner_cache[key] = bool(row and row[0])
            if owner_cache[key]:
                return True
        return False

    # What each function's body touches (it runs as whoever calls it, unless SECURITY DEFINER).
    touches: dict[int, str] = {}
    changed = True
    while changed:
        changed = False
        reached_names = {
            (rels[n[1]][0] if n[0] == "r" else funcs[n[1]][0]): root
            for n, root in reach.items()
            if (n[0] == "r" and n[1] in rels) or (n[0] == "f" and n[1] in funcs)
        }
        reached_names.update({funcs[f][0]: root for f, root in touches.items()})
        for oid, (_name, secdef, lang, body, owner, superuser) in funcs.items():
            if oid not in touches:
                found: str | None = None
                for node in func_edges.get(oid, ()):
                    if node in reach:
                        found = reach[node]
                    elif node[0] == "f" and node[1] in touches:
                        found = touches[node[1]]
                    if found:
                        break
                if found is None and (lang not in _PLAIN_LANGUAGES or _DYNAMIC.search(body)):
                    found = any_root
                if found is None:
                    found = next(
                        (root for n, root in reached_names.items() if _mentions(body, n)), None
                    )
                if found is not None:
                    touches[oid] = found
                    changed = True
            node = ("f", oid)
            if secdef and oid in touches and node not in reach and owner_reaches(owner, superuser):
                reach[node] = touches[oid]
                changed = True
        for oid, (_name, _relkind, invoker) in rels.items():
            node = ("r", oid)
            if node in reach:
                continue
            root: str | None = None
            for is_return, ref in rule_edges.get(oid, ()):
                if is_return and invoker:
                    continue  # security_invoker: reads as the role, checked on each table
                if ref in reach:
                    root = reach[ref]
                    break
            if root is None:
                root = next(
                    (reach[("f", f)] for f in triggers.get(oid, ()) if ("f", f) in reach), None
                )
            if root is not None:
                reach[node] = root
                changed = True

    out: dict[str, str] = {}
    for (kind, oid), root in reach.items():
        name = rels[oid][0] if kind == "r" else funcs[oid][0]
        if name != root and not matches_any(name, patterns):
            out[normalize(name)] = normalize(root)
    return out
