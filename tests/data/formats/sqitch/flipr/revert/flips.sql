-- Revert flipr:flips to its v1.0 shape

BEGIN;

ALTER TABLE flips DROP COLUMN likes;

COMMIT;
