"""Deterministic SQLite benchmark databases: several tables, every storage class, NULLs, blobs,
a table without a primary key, a WITHOUT ROWID table and an index.

Rows are split 40% `accounts` (INTEGER PRIMARY KEY), 40% `events` (no primary key) and 20%
`items` (composite key, WITHOUT ROWID); a row is about 300 bytes on disk, so 1M rows make a
database of roughly 300 MB. The same size and seed always give the same content.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT, balance REAL, visits INTEGER,
    bio TEXT, avatar BLOB
);
CREATE INDEX idx_accounts_email ON accounts(email);
CREATE TABLE events (account_id INTEGER, kind TEXT, at TEXT, amount REAL, payload TEXT);
CREATE TABLE items (
    sku TEXT NOT NULL, warehouse INTEGER NOT NULL, qty INTEGER, note TEXT, tag BLOB,
    PRIMARY KEY (sku, warehouse)
) WITHOUT ROWID;
"""


def build(path: Path, rows: int, *, seed: int = 1) -> Path:
    """Create `path` with `rows` rows in total (it must not exist)."""
    rng = random.Random(seed)  # noqa: S311 - deterministic data, not cryptography
    n_acc, n_evt = rows * 4 // 10, rows * 4 // 10
    n_items = rows - n_acc - n_evt
    words = [f"word{i:04d}" for i in range(2000)]

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA)
        conn.executemany(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    i,
                    f"user{i}@example.com",
                    None if i % 11 == 0 else text(3),
                    round(rng.uniform(-1e4, 1e6), 2),
                    rng.randrange(10**6),
                    text(25),
                    rng.randbytes(48) if i % 3 == 0 else None,
                )
                for i in range(1, n_acc + 1)
            ),
        )
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            (
                (
                    rng.randrange(1, n_acc + 1),
                    rng.choice(["open", "click", "buy", None]),
                    f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    rng.random() * 100,
                    text(30),
                )
                for i in range(n_evt)
            ),
        )
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?)",
            (
                (f"SKU-{i:09d}", i % 7, rng.randrange(1000), text(30), rng.randbytes(16))
                for i in range(n_items)
            ),
        )
        conn.commit()
    finally:
        conn.close()
    return path
