-- Deploy flipr:flips to sqlite (reworked: adds likes)

BEGIN;

ALTER TABLE flips ADD COLUMN likes INTEGER NOT NULL DEFAULT 0;

COMMIT;
