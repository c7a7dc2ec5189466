"""Migrations users already have: directories of sqitch, Flyway, Liquibase (formatted SQL),
golang-migrate, dbmate, goose and Alembic migrations turned into rollproof changes, and
rehearsed one position at a time.

    load_project(directory, fmt=None) -> Project        (model.py, detect.py, one module a tool)
    change_for(migration, ...) -> Change                 (changes.py)
    deployed_ids(project, dsn) -> set | None             (bookkeeping.py, read-only)
    rehearse_range(project, dsn, ...) -> RangeResult     (run.py)

The layer sits between governance and rehearse: it may import rehearse and below, and only the
cli imports it. What is built and what is not: docs/formats.md.
"""
