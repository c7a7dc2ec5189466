-- Revert pgflipr:flips from pg

BEGIN;

DROP TABLE flips;

COMMIT;
