ALTER TABLE items ADD COLUMN note TEXT;
UPDATE items SET note = 'x' WHERE id = 1;
