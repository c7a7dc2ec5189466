-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX notes_body ON notes (body);

-- +goose Down
DROP INDEX notes_body;
