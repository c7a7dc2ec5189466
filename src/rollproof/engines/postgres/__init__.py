"""PostgreSQL: sessions on a scratch server, connections, pg_dump/pg_restore/initdb, the
fingerprint, explanations, the pglast static scope and the change role. The only package that
knows PostgreSQL's dialect."""
