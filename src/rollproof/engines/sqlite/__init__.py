"""SQLite: sessions and clones, the fingerprint and its worker processes, the schema reader,
page proofs, explanations and statement splitting. The only package that knows SQLite's dialect."""
