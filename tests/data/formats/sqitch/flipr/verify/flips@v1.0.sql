SELECT id, nickname, body, timestamp FROM flips WHERE 0;
