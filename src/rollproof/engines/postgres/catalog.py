"""The catalog queries the PostgreSQL fingerprint reads schema and rows' shape from.

Each query returns JSON built by the server (`json_agg`), deparsed by the server's own
`pg_get_*` functions, restricted to user schemas and to objects that are not members of an
extension (an extension's objects are its version, not the database's schema). Which state each
query covers, and what is deliberately left out, is listed in docs/fingerprint.md.
"""

from __future__ import annotations

USER_NS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
    "AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'"
)
NAME = "CASE WHEN n.nspname = 'public' THEN {0} ELSE n.nspname || '.' || {0} END"


def not_extension_member(catalog: str, oid: str) -> str:
    return (
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d "
        f"WHERE d.classid = '{catalog}'::pg_catalog.regclass AND d.objid = {oid} "
        "AND d.deptype = 'e')"
    )


def acl(acl_expr: str, kind: str, owner_expr: str) -> str:
    """An ACL as a JSON array of [grantee, privilege, grantor, grantable], roles by NAME.

    A NULL ACL is the object kind's default (`acldefault`): `REVOKE ALL ... FROM PUBLIC`
    followed by the matching GRANT makes the default explicit without changing anything.
    PUBLIC is the grantee 0.
    """
    default = (
        f"pg_catalog.acldefault('{kind}', {owner_expr})" if kind else "'{}'::pg_catalog.aclitem[]"
    )
    return (
        "(SELECT coalesce(json_agg(json_build_array("
        "CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee) END, "
        "x.privilege_type, pg_catalog.pg_get_userbyid(x.grantor), x.is_grantable) "
        "ORDER BY x.grantee, x.privilege_type, x.grantor), '[]'::json) "
        f"FROM pg_catalog.aclexplode(coalesce({acl_expr}, {default})) x)"
    )


def labels(catalog: str, oid: str, subid: str = "0") -> str:
    """Security labels (every provider) on one object, as [[provider, label], ...]."""
    return (
        "(SELECT json_agg(json_build_array(sl.provider, sl.label) ORDER BY sl.provider) "
        "FROM pg_catalog.pg_seclabel sl "
        f"WHERE sl.classoid = '{catalog}'::pg_catalog.regclass AND sl.objoid = {oid} "
        f"AND sl.objsubid = {subid})"
    )


def comment(catalog: str, oid: str, subid: str = "0") -> str:
    return (
        "(SELECT d.description FROM pg_catalog.pg_description d "
        f"WHERE d.classoid = '{catalog}'::pg_catalog.regclass AND d.objoid = {oid} "
        f"AND d.objsubid = {subid})"
    )


def meta(
    catalog: str, oid: str, owner: str | None = None, acl_expr: str | None = None, kind: str = ""
) -> str:
    """json_build_object pairs every object carries: its identity for the privilege mask
    (`_id`, stripped before hashing), owner and ACL by role name, comment, security labels."""
    parts = [
        f"'_id', '{catalog}:' || {oid}",
        f"'comment', {comment(catalog, oid)}",
        f"'labels', {labels(catalog, oid)}",
    ]
    if owner is not None:
        parts.append(f"'owner', pg_catalog.pg_get_userbyid({owner})")
    if acl_expr is not None:
        assert owner is not None
        parts.append(f"'acl', {acl(acl_expr, kind, owner)}")
    return ", ".join(parts)


COLUMNS = f"""
SELECT coalesce(json_agg(json_build_object(
    'name', a.attname,
    'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
    'notnull', a.attnotnull,
    'default', pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
    'identity', a.attidentity,
    'generated', a.attgenerated,
    'collation', CASE WHEN a.attcollation <> t.typcollation
                      THEN (SELECT collname FROM pg_catalog.pg_collation
                            WHERE oid = a.attcollation) END,
    'storage', a.attstorage,
    'compression', a.attcompression,
    'statistics', a.attstattarget,
    'options', a.attoptions,
    'fdw_options', a.attfdwoptions,
    '_id', 'pg_class:' || c.oid || ':' || a.attnum,
    'acl', {acl("a.attacl", "c", "c.relowner")},
    'comment', {comment("pg_class", "c.oid", "a.attnum")},
    'labels', {labels("pg_class", "c.oid", "a.attnum")}
) ORDER BY a.attnum), '[]'::json)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
"""

TABLES = f"""
SELECT {NAME.format("c.relname")} AS name, json_build_object(
    'type', 'table',
    'kind', c.relkind,
    'persistence', c.relpersistence,
    'columns', ({COLUMNS}),
    'constraints', (SELECT coalesce(json_agg(json_build_object(
            'name', co.conname, 'kind', co.contype,
            'definition', pg_catalog.pg_get_constraintdef(co.oid, true),
            'validated', co.convalidated, 'no_inherit', co.connoinherit,
            {meta("pg_constraint", "co.oid")})
            ORDER BY co.conname), '[]'::json)
        FROM pg_catalog.pg_constraint co WHERE co.conrelid = c.oid),
    'replica_identity', c.relreplident,
    'access_method', (SELECT amname FROM pg_catalog.pg_am WHERE oid = c.relam),
    'of_type', CASE WHEN c.reloftype <> 0 THEN c.reloftype::pg_catalog.regtype::text END,
    'foreign', (SELECT json_build_array(fs.srvname, ft.ftoptions)
        FROM pg_catalog.pg_foreign_table ft
        JOIN pg_catalog.pg_foreign_server fs ON fs.oid = ft.ftserver
        WHERE ft.ftrelid = c.oid),
    {meta("pg_class", "c.oid", "c.relowner", "c.relacl", "r")},
    'partition_key', CASE WHEN c.relkind = 'p'
        THEN pg_catalog.pg_get_partkeydef(c.oid) END,
    'partition_bound', pg_catalog.pg_get_expr(c.relpartbound, c.oid),
    'inherits', (SELECT coalesce(json_agg(i.inhparent::pg_catalog.regclass::text
            ORDER BY i.inhseqno), '[]'::json)
        FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid),
    'options', c.reloptions,
    'row_security', json_build_array(c.relrowsecurity, c.relforcerowsecurity),
    'policies', (SELECT coalesce(json_agg(json_build_object('name', p.polname,
            'command', p.polcmd, 'permissive', p.polpermissive,
            'roles', (SELECT json_agg(CASE WHEN r = 0 THEN 'PUBLIC'
                          ELSE pg_catalog.pg_get_userbyid(r) END ORDER BY 1)
                      FROM pg_catalog.unnest(p.polroles) AS r),
            'using', pg_catalog.pg_get_expr(p.polqual, p.polrelid),
            'with_check', pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid),
            {meta("pg_policy", "p.oid")}) ORDER BY p.polname), '[]'::json)
        FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid),
    'rules', (SELECT coalesce(json_agg(json_build_object('name', r.rulename,
            'definition', pg_catalog.pg_get_ruledef(r.oid, true), 'enabled', r.ev_enabled,
            {meta("pg_rewrite", "r.oid")}) ORDER BY r.rulename), '[]'::json)
        FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN')
)::text AS description,
c.relkind, c.relispopulated, n.nspname, c.relname,
coalesce(pg_catalog.pg_table_size(c.oid), 0) AS size
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f') AND {USER_NS}
AND {not_extension_member("pg_class", "c.oid")}
ORDER BY 1
"""

VIEWS = f"""
SELECT {NAME.format("c.relname")}, json_build_object(
    'type', 'view', 'kind', c.relkind,
    'definition', pg_catalog.pg_get_viewdef(c.oid, true),
    'columns', ({COLUMNS}),
    'options', c.reloptions,
    'access_method', (SELECT amname FROM pg_catalog.pg_am WHERE oid = c.relam),
    'rules', (SELECT coalesce(json_agg(json_build_object('name', r.rulename,
            'definition', pg_catalog.pg_get_ruledef(r.oid, true), 'enabled', r.ev_enabled,
            {meta("pg_rewrite", "r.oid")}) ORDER BY r.rulename), '[]'::json)
        FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'),
    {meta("pg_class", "c.oid", "c.relowner", "c.relacl", "r")}
)::text, c.relkind, c.relispopulated, n.nspname, c.relname,
coalesce(pg_catalog.pg_table_size(c.oid), 0)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND {USER_NS} AND {not_extension_member("pg_class", "c.oid")}
ORDER BY 1
"""

INDEXES = f"""
SELECT {NAME.format("c.relname")}, json_build_object(
    'type', 'index',
    'table', {NAME.format("t.relname")},
    'definition', pg_catalog.pg_get_indexdef(i.indexrelid),
    'valid', i.indisvalid,
    'clustered', i.indisclustered,
    'replica_identity', i.indisreplident,
    'options', c.reloptions,
    'statistics', (SELECT json_agg(a.attstattarget ORDER BY a.attnum)
        FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0),
    {meta("pg_class", "c.oid")},
    'constraint', (SELECT co.conname FROM pg_catalog.pg_constraint co
                   WHERE co.conindid = i.indexrelid AND co.conrelid = i.indrelid LIMIT 1)
)::text
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {USER_NS} AND {not_extension_member("pg_class", "t.oid")}
ORDER BY 1
"""

TRIGGERS = f"""
SELECT tg.tgname, json_build_object(
    'type', 'trigger',
    'table', {NAME.format("c.relname")},
    'definition', pg_catalog.pg_get_triggerdef(tg.oid, true),
    'enabled', tg.tgenabled,
    {meta("pg_trigger", "tg.oid")}
)::text
FROM pg_catalog.pg_trigger tg
JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE NOT tg.tgisinternal AND {USER_NS} AND {not_extension_member("pg_class", "c.oid")}
ORDER BY 1, 2
"""

SEQUENCES = f"""
SELECT {NAME.format("c.relname")}, json_build_object(
    'type', 'sequence',
    'data_type', pg_catalog.format_type(s.seqtypid, NULL),
    'start', s.seqstart, 'increment', s.seqincrement,
    'min', s.seqmin, 'max', s.seqmax, 'cache', s.seqcache, 'cycle', s.seqcycle,
    'persistence', c.relpersistence,
    'owned_by', o.owner,
    {meta("pg_class", "c.oid", "c.relowner", "c.relacl", "s")}
)::text, n.nspname, c.relname, s.seqincrement, o.owner_table, o.owner, o.attnum
FROM pg_catalog.pg_sequence s
JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT CASE WHEN tn.nspname = 'public' THEN tc.relname
                ELSE tn.nspname || '.' || tc.relname END AS owner_table,
           CASE WHEN tn.nspname = 'public' THEN tc.relname
                ELSE tn.nspname || '.' || tc.relname END || '.' || a.attname AS owner,
           a.attnum
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid
    JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
    JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.classid = 'pg_class'::pg_catalog.regclass AND d.objid = c.oid
      AND d.refclassid = 'pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i')
    LIMIT 1
) o ON true
WHERE {USER_NS} AND {not_extension_member("pg_class", "c.oid")}
ORDER BY 1
"""

FUNCTIONS = f"""
SELECT {NAME.format("p.proname")},
json_build_object(
    'type', 'function', 'kind', p.prokind,
    'arguments', pg_catalog.pg_get_function_identity_arguments(p.oid),
    'definition', CASE WHEN p.prokind = 'a' THEN NULL
                       ELSE pg_catalog.pg_get_functiondef(p.oid) END,
    'aggregate', CASE WHEN p.prokind = 'a' THEN (
        SELECT json_build_array(ag.aggkind, ag.aggtransfn::text, ag.aggfinalfn::text,
            ag.aggcombinefn::text, pg_catalog.format_type(ag.aggtranstype, NULL),
            ag.agginitval, pg_catalog.pg_get_function_result(p.oid))
        FROM pg_catalog.pg_aggregate ag WHERE ag.aggfnoid = p.oid) END,
    {meta("pg_proc", "p.oid", "p.proowner", "p.proacl", "f")}
)::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE {USER_NS} AND {not_extension_member("pg_proc", "p.oid")}
ORDER BY 1, 2
"""

TYPES = f"""
SELECT {NAME.format("t.typname")}, json_build_object(
    'type', 'type', 'kind', t.typtype,
    'labels', CASE WHEN t.typtype = 'e' THEN (
        SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder)
        FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) END,
    'base', CASE WHEN t.typtype = 'd'
                 THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
    'notnull', t.typnotnull,
    'default', t.typdefault,
    'constraints', (SELECT coalesce(json_agg(json_build_object('name', co.conname,
            'definition', pg_catalog.pg_get_constraintdef(co.oid, true),
            'validated', co.convalidated, {meta("pg_constraint", "co.oid")})
            ORDER BY co.conname), '[]'::json)
        FROM pg_catalog.pg_constraint co WHERE co.contypid = t.oid),
    'attributes', CASE WHEN t.typtype = 'c' THEN (
        SELECT json_agg(json_build_array(a.attname,
            pg_catalog.format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
    'range', CASE WHEN t.typtype = 'r' THEN (
        SELECT json_build_array(pg_catalog.format_type(r.rngsubtype, NULL),
            r.rngsubopc::text, r.rngcanonical::text, r.rngsubdiff::text)
        FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid) END,
    {meta("pg_type", "t.oid", "t.typowner", "t.typacl", "T")}
)::text
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE {USER_NS} AND t.typtype IN ('e', 'd', 'c', 'r')
AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_catalog.pg_class WHERE oid = t.typrelid) = 'c')
AND {not_extension_member("pg_type", "t.oid")}
ORDER BY 1
"""

EXTENSIONS = f"""
SELECT e.extname, json_build_object('type', 'extension', 'version', e.extversion,
    'schema', n.nspname, 'relocatable', e.extrelocatable, {meta("pg_extension", "e.oid")})::text
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
ORDER BY 1
"""

SCHEMAS = f"""
SELECT n.nspname, json_build_object('type', 'schema',
    {meta("pg_namespace", "n.oid", "n.nspowner", "n.nspacl", "n")})::text
FROM pg_catalog.pg_namespace n
WHERE {USER_NS} AND {not_extension_member("pg_namespace", "n.oid")}
ORDER BY 1
"""

# Every other kind of object pg_dump writes for a database, by catalog: (catalog, owner
# column, ACL column, ACL kind for acldefault, extra description). Their identity is the
# server's own (`pg_identify_object`: type and schema-qualified identity); their description is
# the catalog row without OID-valued columns (which differ between a source and its restored
# clone), the references those held rendered as names, owner, ACL, comment and security labels.
# Built-in objects (OIDs below 16384, FirstNormalObjectId) and extension members are left out.
_OTHER_KINDS: tuple[tuple[str, str | None, str | None, str, str], ...] = (
    ("pg_collation", "collowner", None, "", "NULL"),
    (
        "pg_conversion",
        "conowner",
        None,
        "",
        "json_build_array(x.conproc::pg_catalog.regprocedure::text)",
    ),
    (
        "pg_operator",
        "oprowner",
        None,
        "",
        "json_build_array(x.oprcode::pg_catalog.regprocedure::text, x.oprrest::text, "
        "x.oprjoin::text, x.oprcom::pg_catalog.regoperator::text, "
        "x.oprnegate::pg_catalog.regoperator::text)",
    ),
    ("pg_opclass", "opcowner", None, "", "NULL"),
    ("pg_opfamily", "opfowner", None, "", "NULL"),
    ("pg_am", None, None, "", "json_build_array(x.amhandler::text)"),
    ("pg_cast", None, None, "", "json_build_array(x.castfunc::pg_catalog.regprocedure::text)"),
    (
        "pg_language",
        "lanowner",
        "lanacl",
        "l",
        "json_build_array(x.lanplcallfoid::text, x.laninline::text, x.lanvalidator::text)",
    ),
    (
        "pg_ts_config",
        "cfgowner",
        None,
        "",
        "(SELECT json_agg(json_build_array(m.maptokentype, m.mapseqno, "
        "m.mapdict::pg_catalog.regdictionary::text) ORDER BY 1) "
        "FROM pg_catalog.pg_ts_config_map m WHERE m.mapcfg = x.oid)",
    ),
    ("pg_ts_dict", "dictowner", None, "", "NULL"),
    ("pg_ts_parser", None, None, "", "NULL"),
    ("pg_ts_template", None, None, "", "NULL"),
    (
        "pg_foreign_data_wrapper",
        "fdwowner",
        "fdwacl",
        "F",
        "json_build_array(x.fdwhandler::text, x.fdwvalidator::text)",
    ),
    ("pg_foreign_server", "srvowner", "srvacl", "S", "NULL"),
    (
        "pg_event_trigger",
        "evtowner",
        None,
        "",
        "json_build_array(x.evtfoid::pg_catalog.regprocedure::text)",
    ),
    (
        "pg_publication",
        "pubowner",
        None,
        "",
        "(SELECT json_agg(pg_catalog.to_jsonb(pt) - 'pubname' ORDER BY pt.schemaname, "
        "pt.tablename) FROM pg_catalog.pg_publication_tables pt WHERE pt.pubname = x.pubname)",
    ),
    ("pg_transform", None, None, "", "NULL"),
    (
        "pg_statistic_ext",
        "stxowner",
        None,
        "",
        "json_build_array(pg_catalog.pg_get_statisticsobjdef(x.oid))",
    ),
    ("pg_largeobject_metadata", "lomowner", "lomacl", "L", "NULL"),
    ("pg_default_acl", None, "defaclacl", "", "NULL"),
)

_OID_COLUMNS = (
    "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = '{0}'::pg_catalog.regclass "
    "AND atttypid IN ('pg_catalog.oid'::pg_catalog.regtype, "
    "'pg_catalog.regproc'::pg_catalog.regtype, 'pg_catalog.oidvector'::pg_catalog.regtype, "
    "'pg_catalog.aclitem[]'::pg_catalog.regtype, 'pg_catalog.pg_node_tree'::pg_catalog.regtype)"
)


def _other(catalog: str, owner: str | None, acl_col: str | None, kind: str, extra: str) -> str:
    # A large object's rows live in pg_largeobject_metadata; it is addressed as pg_largeobject.
    classid = "pg_largeobject" if catalog == "pg_largeobject_metadata" else catalog
    # No large object is built in, and their OIDs may be chosen (lo_create(4242)).
    builtin_excluded = "true" if classid == "pg_largeobject" else "x.oid >= 16384"
    row = (
        "(SELECT pg_catalog.jsonb_object_agg(e.key, e.value) "
        "FROM pg_catalog.jsonb_each(pg_catalog.to_jsonb(x)) e "
        # A collation's version is its library's, not the database's.
        f"WHERE e.key <> 'collversion' AND e.key NOT IN ({_OID_COLUMNS.format(catalog)}))"
    )
    owner_expr = f"x.{owner}" if owner else "NULL::pg_catalog.oid"
    if acl_col is None:
        acl_json = "NULL::json"
    elif kind:
        acl_json = acl(f"x.{acl_col}", kind, owner_expr)
    else:
        acl_json = acl(f"x.{acl_col}", "", owner_expr)
    return (
        f"SELECT '{classid}'::pg_catalog.regclass AS classid, x.oid AS objid, "
        f"{owner_expr} AS owner, {acl_json} AS acl, {row} AS row, {extra}::json AS extra "
        f"FROM pg_catalog.{catalog} x WHERE {builtin_excluded} "
        f"AND {not_extension_member(classid, 'x.oid')}"
    )


OTHER_OBJECTS = f"""
SELECT o.type || ':' || o.identity, json_build_object(
    'type', o.type, 'row', u.row, 'references', u.extra,
    '_id', u.classid::text || ':' || u.objid,
    'owner', pg_catalog.pg_get_userbyid(u.owner), 'acl', u.acl,
    'comment', (SELECT d.description FROM pg_catalog.pg_description d
                WHERE d.classoid = u.classid AND d.objoid = u.objid AND d.objsubid = 0),
    'labels', (SELECT json_agg(json_build_array(sl.provider, sl.label) ORDER BY sl.provider)
               FROM pg_catalog.pg_seclabel sl
               WHERE sl.classoid = u.classid AND sl.objoid = u.objid AND sl.objsubid = 0)
)::text
FROM ({" UNION ALL ".join(_other(*k) for k in _OTHER_KINDS)}) u
CROSS JOIN LATERAL pg_catalog.pg_identify_object(u.classid, u.objid, 0) o
WHERE o.schema IS NULL OR o.schema NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1
"""

PRIMARY_KEY = """
SELECT k.attnum::pg_catalog.int4
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
WHERE i.indrelid = %s::pg_catalog.regclass AND i.indisprimary
ORDER BY k.position
"""

# Per column: name, declared type, type OID, whether its collation compares bytes (the
# "C"/"POSIX" collations, or a libc default that is one of them; NULL when not collatable), a
# domain's base type (domains followed down to a type that is not one), the form the
# fingerprint reads it in, and whether it holds OIDs of catalog rows. The form is decided by the
# base type: "binary" (its binary COPY bytes) only for a built-in type (fixed OID, below
# FirstNormalObjectId) that is a base, range or multirange type with a send function, not an
# array (array_send embeds the element type's OID and a has-nulls flag that text round trips
# drop), not geometric (floats inside, see "float") and not an OID alias type (regclass, ...:
# binary-coercible to oid; the same object has another OID on another server); "float" for
# float4/float8 (sent as binary with NaN canonicalised); "text" (the output function) for every
# other type: user and extension types, enums, composites, ranges and domains over them.
TABLE_COLUMNS = """
WITH RECURSIVE chain(attnum, typid, typmod, depth) AS (
    SELECT a.attnum, a.atttypid, a.atttypmod, 0
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = %s::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT c.attnum, t.typbasetype, t.typtypmod, c.depth + 1
    FROM chain c JOIN pg_catalog.pg_type t ON t.oid = c.typid
    WHERE t.typtype = 'd'
), base AS (
    SELECT DISTINCT ON (c.attnum) c.attnum, c.typid, c.typmod, c.depth > 0 AS is_domain
    FROM chain c ORDER BY c.attnum, c.depth DESC
), alias AS (
    -- The object identifier alias types (regclass, regtype, ...): built in, binary-coercible
    -- to oid, and neither oid nor integer themselves. Their values are OIDs of catalog rows.
    SELECT k.castsource AS typid FROM pg_catalog.pg_cast k
    WHERE k.casttarget = 'pg_catalog.oid'::pg_catalog.regtype AND k.castmethod = 'b'
      AND k.castsource NOT IN ('pg_catalog.oid'::pg_catalog.regtype,
                               'pg_catalog.int4'::pg_catalog.regtype)
)
SELECT a.attnum::pg_catalog.int4, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
    a.atttypid::pg_catalog.int8,
    CASE WHEN a.attcollation = 0 THEN NULL
         WHEN a.attcollation IN (950, 951) THEN true
         WHEN a.attcollation = 100 THEN (
             SELECT d.datcollate IN ('C', 'POSIX')
                    AND coalesce(pg_catalog.to_jsonb(d) ->> 'datlocprovider', 'c') = 'c'
             FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
         ELSE false END,
    CASE WHEN b.is_domain THEN pg_catalog.format_type(b.typid, b.typmod) END,
    CASE WHEN t.oid >= 16384 OR t.typtype NOT IN ('b', 'r', 'm') OR t.typsend = 0
              OR t.typcategory IN ('A', 'G') OR t.oid IN (SELECT typid FROM alias) THEN 'text'
         WHEN t.typsend IN ('pg_catalog.float4send'::pg_catalog.regproc,
                            'pg_catalog.float8send'::pg_catalog.regproc) THEN 'float'
         ELSE 'binary' END,
    t.oid IN (SELECT typid FROM alias) OR t.typelem IN (SELECT typid FROM alias)
FROM pg_catalog.pg_attribute a
JOIN base b ON b.attnum = a.attnum
JOIN pg_catalog.pg_type t ON t.oid = b.typid
WHERE a.attrelid = %s::pg_catalog.regclass
ORDER BY a.attnum
"""
