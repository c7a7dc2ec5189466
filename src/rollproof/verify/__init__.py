"""The packet format and its fail-closed validator: bytes in, findings out.

Imports only `rollproof.core` (and jsonschema, cryptography): never an engine, a rehearsal,
governance or a database driver, so the code that judges evidence is small, pinned by hash
(`pin.py`) and cannot be reached by what it judges. Every function that renders a derived file
(commands.sh, RERUN.sh, report.md's title, the attestation statement) lives here so the writer in
`rollproof.evidence` and the validator use one definition.
"""
