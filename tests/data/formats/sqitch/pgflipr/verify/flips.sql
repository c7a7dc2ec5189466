-- Verify pgflipr:flips on pg

SELECT id, nickname, body FROM flips WHERE false;
