-- One statement per entry, separated by lines of `-- ---`. From PostgreSQL's "SQL Commands".
CREATE TABLE t1 (id bigserial PRIMARY KEY, b text UNIQUE NOT NULL, c numeric DEFAULT 0 CHECK (c >= 0))
-- ---
CREATE TABLE IF NOT EXISTS t2 (a int, b int GENERATED ALWAYS AS (a * 2) STORED)
-- ---
CREATE TABLE p (id int, d date) PARTITION BY RANGE (d)
-- ---
CREATE TABLE p_2022 PARTITION OF p FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')
-- ---
CREATE UNLOGGED TABLE u (x int)
-- ---
CREATE TABLE t3 (id int REFERENCES t1 (id) ON DELETE CASCADE)
-- ---
CREATE TABLE t4 AS SELECT * FROM t1
-- ---
CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM t1 WITH NO DATA
-- ---
REFRESH MATERIALIZED VIEW CONCURRENTLY mv
-- ---
CREATE VIEW v AS SELECT id FROM t1
-- ---
CREATE OR REPLACE VIEW v WITH (security_invoker = true) AS SELECT id FROM t1
-- ---
CREATE INDEX CONCURRENTLY IF NOT EXISTS ix ON t1 USING btree (lower(b)) INCLUDE (c) WHERE c > 0
-- ---
CREATE UNIQUE INDEX ix2 ON t1 (b)
-- ---
CREATE SEQUENCE s START 10 INCREMENT 2
-- ---
ALTER SEQUENCE s OWNED BY t1.id
-- ---
CREATE TYPE mood AS ENUM ('sad', 'ok')
-- ---
ALTER TYPE mood ADD VALUE 'happy'
-- ---
CREATE TYPE pair AS (a int, b text)
-- ---
CREATE DOMAIN posint AS int CHECK (VALUE > 0)
-- ---
ALTER DOMAIN posint SET DEFAULT 1
-- ---
CREATE TYPE floatrange AS RANGE (subtype = float8)
-- ---
CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql AS $$ SELECT x + 1 $$
-- ---
CREATE OR REPLACE PROCEDURE pr() LANGUAGE plpgsql AS $$ BEGIN NULL; END $$
-- ---
ALTER FUNCTION f(int) STABLE
-- ---
CREATE AGGREGATE agg (int) (sfunc = int4pl, stype = int)
-- ---
CREATE TRIGGER trg AFTER INSERT ON t1 FOR EACH ROW EXECUTE FUNCTION f()
-- ---
CREATE RULE r AS ON INSERT TO v DO INSTEAD NOTHING
-- ---
CREATE POLICY pol ON t1 FOR SELECT TO PUBLIC USING (c > 0)
-- ---
ALTER POLICY pol ON t1 USING (c > 1)
-- ---
DROP POLICY pol ON t1
-- ---
CREATE SCHEMA app
-- ---
CREATE EXTENSION IF NOT EXISTS pgcrypto
-- ---
ALTER EXTENSION pgcrypto UPDATE
-- ---
CREATE STATISTICS st (dependencies) ON b, c FROM t1
-- ---
CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()
-- ---
CREATE ROLE app_reader NOLOGIN
-- ---
ALTER ROLE app_reader SET search_path = app
-- ---
CREATE DATABASE other
-- ---
ALTER SYSTEM SET work_mem = '8MB'
-- ---
ALTER TABLE t1 ADD COLUMN d text, ALTER COLUMN c TYPE bigint, DROP COLUMN b
-- ---
ALTER TABLE t1 ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES t3 (id) NOT VALID
-- ---
ALTER TABLE t1 ENABLE ROW LEVEL SECURITY
-- ---
ALTER TABLE p ATTACH PARTITION p_2022 FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')
-- ---
ALTER TABLE t1 RENAME TO t1_old
-- ---
ALTER TABLE t1 RENAME COLUMN b TO b2
-- ---
ALTER TABLE t1 SET SCHEMA app
-- ---
ALTER TABLE t1 OWNER TO app_reader
-- ---
ALTER INDEX ix RENAME TO ix_old
-- ---
DROP TABLE IF EXISTS t4 CASCADE
-- ---
DROP INDEX CONCURRENTLY ix2
-- ---
DROP VIEW v
-- ---
DROP FUNCTION f(int)
-- ---
DROP TRIGGER trg ON t1
-- ---
DROP TYPE mood
-- ---
DROP SEQUENCE s
-- ---
GRANT SELECT ON t1 TO app_reader
-- ---
REVOKE ALL ON t1 FROM PUBLIC
-- ---
GRANT app_reader TO postgres
-- ---
ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO app_reader
-- ---
COMMENT ON TABLE t1 IS 'orders'
-- ---
ANALYZE t1
-- ---
VACUUM (ANALYZE) t1
-- ---
CLUSTER t1 USING ix
-- ---
REINDEX TABLE t1
-- ---
LOCK TABLE t1 IN SHARE MODE
-- ---
SET search_path = app, public
-- ---
SET LOCAL statement_timeout = '5s'
-- ---
RESET ALL
-- ---
SHOW work_mem
-- ---
DO $$ BEGIN PERFORM 1; END $$
-- ---
CALL pr()
-- ---
INSERT INTO t1 (b) VALUES ('x') ON CONFLICT (b) DO NOTHING
-- ---
UPDATE t1 SET c = 1 FROM t3 WHERE t3.id = t1.id
-- ---
DELETE FROM t1 USING t3 WHERE t3.id = t1.id
-- ---
MERGE INTO t1 USING t3 ON t1.id = t3.id WHEN MATCHED THEN UPDATE SET c = 0
-- ---
TRUNCATE t1, t3 RESTART IDENTITY
-- ---
COPY t1 FROM STDIN
-- ---
SELECT nextval('s')
-- ---
EXPLAIN ANALYZE SELECT * FROM t1
-- ---
CHECKPOINT
-- ---
NOTIFY chan, 'hello'
-- ---
BEGIN
-- ---
COMMIT
