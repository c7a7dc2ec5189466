-- +goose Up
CREATE TABLE profiles (id integer PRIMARY KEY, user_id integer NOT NULL, bio text);
INSERT INTO profiles (id, user_id, bio) SELECT id, id, 'bio of ' || name FROM users;

-- +goose Down
DROP TABLE profiles;
