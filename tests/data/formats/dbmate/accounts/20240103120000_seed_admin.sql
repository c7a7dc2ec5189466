-- migrate:up
INSERT INTO accounts (email) VALUES ('admin@example.com');

-- migrate:down
