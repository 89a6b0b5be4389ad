"""The SQLite store: results and their detections, or a tracker's events, in one database file (WAL), with the
standard library's sqlite3.

The schema version lives in ``PRAGMA user_version``; missing migrations are applied in one transaction at start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from common.plugins import STORES
from common.settings import ConfigPath, StoreSettings
from common.wire import Event, Result
from sink.stores.base import StoreError
from sink.stores.sql import (
    DETECTION_COLUMNS,
    EVENT_COLUMNS,
    EVENT_ZONE_COLUMNS,
    LATEST,
    RESULT_COLUMNS,
    DetectionQueries,
    detection_rows,
    event_row,
    event_zone_rows,
    insert_sql,
    pending_migrations,
    result_row,
)

_INSERT_RESULT = insert_sql("results", RESULT_COLUMNS, "?")
_INSERT_DETECTION = insert_sql("detections", DETECTION_COLUMNS, "?")
_INSERT_EVENT = insert_sql("events", EVENT_COLUMNS, "?")
_INSERT_EVENT_ZONE = insert_sql("event_zones", EVENT_ZONE_COLUMNS, "?")


class SqliteSinkConfig(StoreSettings):
    """Results and their detections (or a tracker's events) in an SQLite database (WAL), created or migrated at
    start."""

    keeps_events: ClassVar[bool] = True
    kind: Literal["sqlite"] = "sqlite"
    path: ConfigPath = Field(description="Database file; created with its folder if missing.")
    busy_timeout_s: float = Field(10.0, gt=0, le=600, description="Wait this long for another writer's lock.")


class SqliteStore(DetectionQueries):
    """A writable store, created or migrated at start; :meth:`open` opens an existing one read-only."""

    placeholder = "?"
    path: Path
    migrated: tuple[int, ...]
    """Schema versions this store applied when it opened the database (empty when it was up to date)."""
    _db: sqlite3.Connection

    def __init__(self, cfg: SqliteSinkConfig) -> None:
        self.path = Path(cfg.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; each write and the migration is one explicit BEGIN..COMMIT.
        self._db = sqlite3.connect(self.path, timeout=cfg.busy_timeout_s, isolation_level=None)
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: SQLite cannot use WAL on this file (journal mode {mode!r})")
            # In WAL mode, NORMAL syncs the log only at checkpoints, so a power cut could lose a commit that was
            # already acked; FULL syncs the log at every commit.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self.migrated = self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"{self.path}: cannot open the SQLite database: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open(cls, path: Path | str, *, busy_timeout_s: float = 10.0) -> SqliteStore:
        """Open an existing database read-only, to query it without a sink config."""
        store = cls.__new__(cls)
        store.path = Path(path).expanduser()
        if not store.path.is_file():
            raise StoreError(f"{store.path}: no such database file; give the path of a sqlite sink's database")
        store._db = sqlite3.connect(
            f"{store.path.resolve().as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s, isolation_level=None
        )
        store.migrated = ()
        try:
            version = store._version()
            pending_migrations(version, str(store.path))  # raises when the database is newer than this code
            if version < LATEST:
                why = "not a streamyolo database" if version == 0 else "start its sqlite sink once to migrate it"
                raise StoreError(f"{store.path}: schema version {version}, this streamyolo reads {LATEST}: {why}")
        except sqlite3.Error as exc:
            store._db.close()
            raise StoreError(f"{store.path}: cannot open the SQLite database: {exc}") from exc
        except BaseException:
            store._db.close()
            raise
        return store

    def write(self, results: Sequence[Result]) -> int:
        """Store results and their detections in one transaction; returns how many results were new."""
        if not results:
            return 0
        with self._transaction():
            stored = self._db.executemany(_INSERT_RESULT, [result_row(r) for r in results]).rowcount
            self._db.executemany(_INSERT_DETECTION, [row for r in results for row in detection_rows(r)])
        return stored

    def write_events(self, events: Sequence[Event]) -> int:
        """Store events and their zone rows in one transaction; returns how many events were new."""
        if not events:
            return 0
        with self._transaction():
            stored = self._db.executemany(_INSERT_EVENT, [event_row(e) for e in events]).rowcount
            self._db.executemany(_INSERT_EVENT_ZONE, [row for e in events for row in event_zone_rows(e)])
        return stored

    def _rows(self, text: str, params: list[Any]) -> Iterable[Sequence[Any]]:
        return self._db.execute(text, params)

    def close(self) -> None:
        self._db.close()

    def _version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    def _migrate(self) -> tuple[int, ...]:
        # BEGIN IMMEDIATE takes the write lock before reading the version: of two sinks starting together, the
        # second waits, then finds the schema up to date.
        with self._transaction():
            pending = pending_migrations(self._version(), str(self.path))
            for version, statements in pending:
                for statement in statements:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version}")
        return tuple(version for version, _ in pending)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls back by itself on some errors (disk full, I/O)
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


STORES.register(SqliteSinkConfig, SqliteStore)
