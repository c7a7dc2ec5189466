-- Deploy pgflipr:flips to pg
-- requires: users

BEGIN;

CREATE TABLE flips (
    id        integer     PRIMARY KEY,
    nickname  text        NOT NULL,
    body      text        NOT NULL DEFAULT ''
);

COMMIT;
