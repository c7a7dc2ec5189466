-- migrate:up
CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL UNIQUE, nickname text);
INSERT INTO accounts (email, nickname) SELECT 'user' || i || '@example.com', 'nick' || i
FROM generate_series(1, 25) AS i;

-- migrate:down
DROP TABLE accounts;
