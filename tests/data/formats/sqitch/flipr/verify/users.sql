-- Verify flipr:users on sqlite

SELECT nickname, password, timestamp FROM users WHERE 0;
