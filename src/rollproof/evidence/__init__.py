"""Writing evidence packets: assembling the files of a rehearsal's packet, signing it, and writing
any tree of files atomically (temporary directory, fsync, rename).

The packet's format (layout, scripts, report.md title, attestation envelope) is defined once in
`rollproof.verify`, which owns what a valid packet is; this package renders with those same
functions, so what it writes always validates.
"""
