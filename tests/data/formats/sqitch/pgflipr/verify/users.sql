-- Verify pgflipr:users on pg

SELECT nickname, password, created FROM users WHERE false;
