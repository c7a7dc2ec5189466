-- migrate:up
ALTER TABLE accounts DROP COLUMN nickname;

-- migrate:down
-- Lossy: the column comes back, the nicknames do not.
ALTER TABLE accounts ADD COLUMN nickname text;
