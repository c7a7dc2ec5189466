"""The pure model every other layer builds on: verdicts, errors, canonical bytes, the change,
the fingerprint format, invariants, the isolation proof, explanations, redaction, the policy file
and operator public keys, and the vocabulary of surfaces and the run-time guard.

Nothing here opens a database, imports a database driver (sqlite3, apsw, psycopg), prints, or
imports any other part of rollproof. Files are only read where the model is a file (change.toml,
rollproof.toml, a public key); nothing here writes.
"""
