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


COLUMNS = """
SELECT coalesce(json_agg(json_build_object(
    'name', a.attname,
    'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
    'notnull', a.attnotnull,
    'default', pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
    'identity', a.attidentity,
    'generated', a.attgenerated,
    'collation', CASE WHEN a.attcollation <> t.typcollation
                      THEN (SELECT collname FROM pg_catalog.pg_collation
                            WHERE oid = a.attcollation) END
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
    'constraints', (SELECT coalesce(json_agg(json_build_array(
            co.conname, co.contype, pg_catalog.pg_get_constraintdef(co.oid, true))
            ORDER BY co.conname), '[]'::json)
        FROM pg_catalog.pg_constraint co WHERE co.conrelid = c.oid),
    'partition_key', CASE WHEN c.relkind = 'p'
        THEN pg_catalog.pg_get_partkeydef(c.oid) END,
    'partition_bound', pg_catalog.pg_get_expr(c.relpartbound, c.oid),
    'inherits', (SELECT coalesce(json_agg(i.inhparent::pg_catalog.regclass::text
            ORDER BY i.inhseqno), '[]'::json)
        FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid),
    'options', c.reloptions,
    'row_security', json_build_array(c.relrowsecurity, c.relforcerowsecurity),
    'policies', (SELECT coalesce(json_agg(json_build_array(p.polname, p.polcmd,
            p.polpermissive, pg_catalog.pg_get_expr(p.polqual, p.polrelid),
            pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)) ORDER BY p.polname), '[]'::json)
        FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid),
    'rules', (SELECT coalesce(json_agg(pg_catalog.pg_get_ruledef(r.oid, true)
            ORDER BY r.rulename), '[]'::json)
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
    'options', c.reloptions
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
    'enabled', tg.tgenabled
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
    'owned_by', o.owner
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
        FROM pg_catalog.pg_aggregate ag WHERE ag.aggfnoid = p.oid) END
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
    'constraints', (SELECT coalesce(json_agg(json_build_array(co.conname,
            pg_catalog.pg_get_constraintdef(co.oid, true)) ORDER BY co.conname), '[]'::json)
        FROM pg_catalog.pg_constraint co WHERE co.contypid = t.oid),
    'attributes', CASE WHEN t.typtype = 'c' THEN (
        SELECT json_agg(json_build_array(a.attname,
            pg_catalog.format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
    'range', CASE WHEN t.typtype = 'r' THEN (
        SELECT json_build_array(pg_catalog.format_type(r.rngsubtype, NULL),
            r.rngsubopc::text, r.rngcanonical::text, r.rngsubdiff::text)
        FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid) END
)::text
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE {USER_NS} AND t.typtype IN ('e', 'd', 'c', 'r')
AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_catalog.pg_class WHERE oid = t.typrelid) = 'c')
AND {not_extension_member("pg_type", "t.oid")}
ORDER BY 1
"""

EXTENSIONS = """
SELECT e.extname, json_build_object('type', 'extension', 'version', e.extversion,
    'schema', n.nspname)::text
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
ORDER BY 1
"""

SCHEMAS = f"""
SELECT n.nspname, json_build_object('type', 'schema')::text
FROM pg_catalog.pg_namespace n
WHERE {USER_NS} AND {not_extension_member("pg_namespace", "n.oid")}
ORDER BY 1
"""

COMMENTS = f"""
SELECT {NAME.format("c.relname")}, d.objsubid, d.description
FROM pg_catalog.pg_description d
JOIN pg_catalog.pg_class c ON d.classoid = 'pg_class'::pg_catalog.regclass AND d.objoid = c.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {USER_NS}
ORDER BY 1, 2
"""

PRIMARY_KEY = """
SELECT k.attnum::pg_catalog.int4
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
WHERE i.indrelid = %s::pg_catalog.regclass AND i.indisprimary
ORDER BY k.position
"""

# Per column: name, declared type, type OID, and whether its collation compares bytes (the
# "C"/"POSIX" collations, or a libc default that is one of them), NULL when not collatable.
TABLE_COLUMNS = """
SELECT a.attnum::pg_catalog.int4, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
    a.atttypid::pg_catalog.int8,
    CASE WHEN a.attcollation = 0 THEN NULL
         WHEN a.attcollation IN (950, 951) THEN true
         WHEN a.attcollation = 100 THEN (
             SELECT d.datcollate IN ('C', 'POSIX')
                    AND coalesce(pg_catalog.to_jsonb(d) ->> 'datlocprovider', 'c') = 'c'
             FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
         ELSE false END
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = %s::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# Built-in types (by their fixed OIDs) whose equality is identity of the rendered text: two
# values that compare equal (text compared bytewise; timestamptz rendered in UTC) always print
# the same, so their own comparison orders a table without a primary key.
