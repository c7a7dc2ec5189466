-- Lossy: the column comes back, the bios do not.
ALTER TABLE profiles ADD COLUMN bio text;
