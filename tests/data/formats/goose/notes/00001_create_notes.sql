-- +goose Up
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, updated_at TEXT);

-- +goose StatementBegin
CREATE TRIGGER notes_touch AFTER UPDATE OF body ON notes
BEGIN
    UPDATE notes SET updated_at = 'changed' WHERE id = NEW.id;
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER notes_touch;
DROP TABLE notes;
