-- The bio moves to another service; the column goes.
ALTER TABLE profiles DROP COLUMN bio;
