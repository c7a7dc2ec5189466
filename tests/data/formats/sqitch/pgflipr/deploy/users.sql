-- Deploy pgflipr:users to pg

BEGIN;

CREATE TABLE users (
    nickname  text        PRIMARY KEY,
    password  text        NOT NULL,
    created   timestamptz NOT NULL DEFAULT now()
);

COMMIT;
