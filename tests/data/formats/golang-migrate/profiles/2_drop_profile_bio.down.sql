-- Lossy: the column comes back, empty.
ALTER TABLE profiles ADD COLUMN bio TEXT;
