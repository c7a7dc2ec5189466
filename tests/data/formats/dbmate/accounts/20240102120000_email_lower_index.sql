-- migrate:up transaction:false
CREATE INDEX accounts_email_lower ON accounts (lower(email));

-- migrate:down
DROP INDEX accounts_email_lower;
