-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY accounts_email_lower ON accounts (lower(email));

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY accounts_email_lower;
