"""The optional C accelerator of the SQLite fingerprint (csrc/rowcodec.c, docs/fingerprint.md).

Everything else about the package is declared in pyproject.toml. The extension is a SQLite
loadable extension, not a Python module: it is built next to the Python package with Python's
extension suffix only so that pip places it there, and it is `optional`, so an install without
a C compiler still works (the fingerprint then takes the pure-Python path, same digests).

The same source is built twice, as two files: `_rowcodec` is loaded by APSW's SQLite (the
fingerprint workers), `_rowcodec_host` is registered with the SQLite that Python's `sqlite3`
module uses (reads in the rollproof process itself). Each copy keeps the API table of the
SQLite that loaded it, so one file cannot serve both libraries in one process. `_digests` is
an ordinary Python extension module: it sorts and merges a key-less table's row digests (both
engines). `_pgcopy` is one too: it drives libpq's binary COPY loop for the PostgreSQL
fingerprint, through the libpq functions psycopg already loaded (it links no libpq itself).
csrc/blake2s.h is the BLAKE2s both `_rowcodec` and `_pgcopy` include.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildLoadableExtension(build_ext):
    """Export SQLite's entry point, not the `PyInit_` function a Python module would have."""

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return list(ext.export_symbols)


setup(
    ext_modules=[
        Extension(
            f"rollproof.engines.sqlite.{name}",
            sources=["csrc/rowcodec.c"],
            depends=["csrc/sqlite3.h", "csrc/sqlite3ext.h", "csrc/blake2s.h"],
            include_dirs=["csrc"],
            export_symbols=["sqlite3_rowcodec_init"],
            optional=True,
        )
        for name in ("_rowcodec", "_rowcodec_host")
    ]
    + [
        Extension(
            "rollproof.engines._digests",
            sources=["csrc/digests.c"],
            export_symbols=["PyInit__digests"],
            optional=True,
        ),
        Extension(
            "rollproof.engines.postgres._pgcopy",
            sources=["csrc/pgcopy.c"],
            depends=["csrc/blake2s.h"],
            include_dirs=["csrc"],
            export_symbols=["PyInit__pgcopy"],
            optional=True,
        ),
    ],
    cmdclass={"build_ext": BuildLoadableExtension},
)
