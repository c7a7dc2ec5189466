"""Database engines: the only modules that know a SQL dialect."""
