"""The eviction order of a cache directory, in SQLite beside the disk index: what the stores
hold, how big each piece is, and when it was last served, shared by every process on the
directory (workers, commands) and kept on disk, so that a server's memory does not grow with
the cache and a restart has nothing to rebuild.

The same calls as the fleet's order in Redis (proxy.store.redisorder), with the same rules:
a piece is counted once however many processes record it, its last use only moves later,
and a use of what is not stored is dropped. The total is kept by triggers, in the
transaction that changes the entries, so no process ever has to add the sizes up.

``seen`` marks the entries a walk of the stores found (``mark``), so that the walk can drop
what it did not find (``unseen``) without holding every key in memory.

SQLite calls take well under a millisecond for the batches the callers make, so they run on
the event loop, as the disk index's do.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.store.redisorder import Key, Ranked

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, size INTEGER NOT NULL, used REAL NOT NULL, seen INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_used ON entries (used);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER);
INSERT OR IGNORE INTO meta VALUES ('total', 0);
CREATE TRIGGER IF NOT EXISTS counted AFTER INSERT ON entries BEGIN
    UPDATE meta SET value = value + new.size WHERE name = 'total';
END;
CREATE TRIGGER IF NOT EXISTS uncounted AFTER DELETE ON entries BEGIN
    UPDATE meta SET value = value - old.size WHERE name = 'total';
END;
"""
_STORED = """
INSERT INTO entries (key, size, used) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET used = max(used, excluded.used)
"""


def _member(key: Key) -> str:
    return f"{key[0].value}:{key[1]}"


def _key(member: str) -> Key:
    kind, digest = member.split(":", 1)
    return Kind(kind), Digest.parse(digest)


# Seconds a process waits for another's write to the order before giving up.
BUSY_TIMEOUT = 60.0


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch to write-ahead logging. The switch takes a lock that SQLite does not wait for
    as it waits for writes: workers opening a new order at once would otherwise fail."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class DiskOrder:
    """``close`` after use."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each write below is one statement or an explicit transaction.
        self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
        _use_wal(self._db)
        self._db.execute("PRAGMA synchronous = NORMAL")
        # A small page cache: the table is read at its cold end, a page at a time.
        self._db.execute("PRAGMA cache_size = -1024")
        # Idempotent, so that processes opening the directory at once may all run it.
        self._db.executescript(_SCHEMA)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    async def stored(self, entries: Mapping[Key, tuple[int, float]]) -> None:
        """Content stored (or found stored), with its size and last use."""
        if entries:
            rows = [(_member(key), size, when) for key, (size, when) in entries.items()]
            with self._transaction():
                self._db.executemany(_STORED, rows)

    async def used(self, uses: Mapping[Key, float]) -> None:
        """Last uses, each kept only if later than the recorded one, of stored content."""
        if uses:
            rows = [(when, _member(key), when) for key, when in uses.items()]
            with self._transaction():
                self._db.executemany("UPDATE entries SET used = ? WHERE key = ? AND used < ?", rows)

    async def removed(self, key: Key) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM entries WHERE key = ?", (_member(key),))

    async def total(self) -> int:
        return int(self._meta("total") or 0)

    async def coldest(self) -> float | None:
        """The last use of the least recently used content, None when nothing is stored."""
        row = self._db.execute("SELECT min(used) FROM entries").fetchone()
        return None if row[0] is None else float(row[0])

    async def oldest(self, start: int, count: int) -> list[Ranked]:
        """Entries ``start`` to ``start + count``, least recently used first."""
        rows = self._db.execute(
            "SELECT key, size, used FROM entries ORDER BY used LIMIT ? OFFSET ?", (count, start)
        )
        return [Ranked(_key(key), size, used) for key, size, used in rows]

    async def size(self, key: Key) -> int | None:
        row = self._db.execute("SELECT size FROM entries WHERE key = ?", (_member(key),))
        found = row.fetchone()
        return None if found is None else int(found[0])

    async def mark(self, keys: Iterable[Key], walk: int) -> set[Key]:
        """Mark ``keys`` as found by the walk numbered ``walk``; those the order lacks."""
        members = {_member(key): key for key in keys}
        with self._transaction():
            for member in members:
                self._db.execute("UPDATE entries SET seen = ? WHERE key = ?", (walk, member))
            known = self._db.execute(
                f"SELECT key FROM entries WHERE key IN ({','.join('?' * len(members))})",
                list(members),
            ).fetchall()
        return set(members.values()) - {members[row[0]] for row in known}

    async def unseen(self, walk: int, count: int, after: str = "") -> list[Key]:
        """Up to ``count`` entries the walk ``walk`` did not find, past ``after`` (a member,
        for paging)."""
        rows = self._db.execute(
            "SELECT key FROM entries WHERE seen != ? AND key > ? ORDER BY key LIMIT ?",
            (walk, after, count),
        )
        return [_key(row[0]) for row in rows]

    async def matched_generation(self) -> int | None:
        """The index's change counter when the order last matched the stores."""
        return self._meta("generation")

    async def matched(self, generation: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (generation,))

    def _meta(self, name: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    async def close(self) -> None:
        self._db.close()


def member(key: Key) -> str:
    """The order's text for ``key``: what ``unseen`` pages by."""
    return _member(key)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: the write lock from the start, so two processes never both
    read and then fail to upgrade."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
