CREATE TABLE profiles (user_id INTEGER PRIMARY KEY REFERENCES users (id), bio TEXT);
INSERT INTO profiles (user_id, bio) SELECT id, 'bio of ' || name FROM users;
