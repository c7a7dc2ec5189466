-- migrate:up
CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);

-- migrate:down
DROP TABLE accounts;
