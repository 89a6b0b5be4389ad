"""The PostgreSQL store: results and their detections in two tables (or a tracker's events), with psycopg 3.

The schema version lives in the table ``streamyolo_schema``; missing migrations are applied in one transaction at
start, under an advisory lock so that sinks starting together migrate once. A batch is inserted with ``executemany``
(psycopg pipelines it: one round trip) and committed before ``write`` returns.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from common.plugins import STORES
from common.redact import redact_text
from common.settings import StoreSettings
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

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

_INSERT_RESULT = insert_sql("results", RESULT_COLUMNS, "%s")
_INSERT_DETECTION = insert_sql("detections", DETECTION_COLUMNS, "%s")
_INSERT_EVENT = insert_sql("events", EVENT_COLUMNS, "%s")
_INSERT_EVENT_ZONE = insert_sql("event_zones", EVENT_ZONE_COLUMNS, "%s")
_HAS_VERSIONS = "SELECT 1 WHERE to_regclass('streamyolo_schema') IS NOT NULL"
_MIGRATION_LOCK = 0x73747265616D796F
"""Advisory lock key ("streamyo") shared by every streamyolo migration in a database; migrations are rare and short."""


class PostgresSinkConfig(StoreSettings):
    """Results and their detections (or a tracker's events) in PostgreSQL (psycopg 3), schema created or migrated at
    start."""

    keeps_events: ClassVar[bool] = True
    kind: Literal["postgres"] = "postgres"
    url: str = Field(
        description="postgresql:// URL (libpq's other settings, such as PGPASSWORD, apply too).",
        pattern=r"^postgres(ql)?://",
    )
    connect_timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout of one connection attempt.")


def _describe(url: str, schema: str | None) -> str:
    """Where the store is, for messages: host, port, database and schema, never the password."""
    import psycopg  # psycopg loads in a PostgreSQL sink only: every process imports the plug-in modules
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparsable URL)"
    where = f"PostgreSQL {info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
    return where if schema is None else f"{where} schema {schema}"


class PostgresStore(DetectionQueries):
    """A writable store, created or migrated at start; :meth:`open` opens an existing one read-only.

    ``schema`` keeps the tables in a schema of their own (created if missing) instead of the search path's first.
    """

    placeholder = "%s"
    where: str
    """The server, database and schema, for messages (never the password)."""
    migrated: tuple[int, ...]
    """Schema versions this store applied when it connected (empty when it was up to date)."""
    _conn: psycopg.Connection[tuple[Any, ...]]

    def __init__(self, cfg: PostgresSinkConfig, *, schema: str | None = None) -> None:
        self._start(cfg.url, schema, cfg.connect_timeout_s, read_only=False)
        try:
            self.migrated = self._migrate()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open(cls, url: str, *, schema: str | None = None, connect_timeout_s: float = 10.0) -> PostgresStore:
        """Connect read-only to an existing store, to query it without a sink config."""
        store = cls.__new__(cls)
        store._start(url, schema, connect_timeout_s, read_only=True)
        store.migrated = ()
        try:
            version = store._version() if store._exists(_HAS_VERSIONS) else 0
            pending_migrations(version, store.where)  # raises when the database is newer than this code
            if version < LATEST:
                why = "no streamyolo tables there" if version == 0 else "start its postgres sink once to migrate it"
                raise StoreError(f"{store.where}: schema version {version}, this streamyolo reads {LATEST}: {why}")
        except BaseException:
            store._conn.close()
            raise
        return store

    def write(self, results: Sequence[Result]) -> int:
        """Store results and their detections in one transaction; returns how many results were new.

        A lost connection is reconnected once and the batch retried: storing is idempotent, so a batch that did
        commit before the connection dropped stores nothing twice. When that fails too, the next write tries again.
        """
        if not results:
            return 0
        rows = [result_row(r) for r in results]
        detections = [row for r in results for row in detection_rows(r)]
        return self._store(f"{len(rows)} results", [(_INSERT_RESULT, rows), (_INSERT_DETECTION, detections)])

    def write_events(self, events: Sequence[Event]) -> int:
        """Store events and their zone rows in one transaction; returns how many events were new. A lost connection
        is handled as in :meth:`write`."""
        if not events:
            return 0
        rows = [event_row(e) for e in events]
        zones = [row for e in events for row in event_zone_rows(e)]
        return self._store(f"{len(rows)} events", [(_INSERT_EVENT, rows), (_INSERT_EVENT_ZONE, zones)])

    def _store(self, what: str, inserts: list[tuple[str, list[tuple[Any, ...]]]]) -> int:
        """Run the inserts in one transaction, reconnecting once when the connection was lost; returns how many rows
        the first insert stored."""
        import psycopg

        try:
            return self._insert(inserts)
        except psycopg.OperationalError as exc:
            if not self._conn.closed:  # still connected: the error is not about the connection
                raise
            log.warning("%s: connection lost while storing %s (%s); reconnecting", self.where, what, exc)
        self._conn.close()
        try:
            self._conn = self._connect()
            return self._insert(inserts)
        except (psycopg.OperationalError, StoreError) as exc:
            raise StoreError(
                f"{self.where}: lost the connection while storing {what}, and storing them again after "
                f"reconnecting failed: {exc}; check that the server is up and reachable"
            ) from exc

    def _rows(self, text: str, params: list[Any]) -> Iterable[Sequence[Any]]:
        return self._conn.execute(text, params)

    def close(self) -> None:
        self._conn.close()

    def _start(self, url: str, schema: str | None, connect_timeout_s: float, *, read_only: bool) -> None:
        self._url = url
        self._schema = schema
        self._connect_timeout_s = connect_timeout_s
        self._read_only = read_only
        self.where = _describe(url, schema)
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg
        from psycopg import sql

        # autocommit: statements outside an explicit transaction() block never leave a transaction open.
        try:
            conn = psycopg.connect(self._url, connect_timeout=math.ceil(self._connect_timeout_s), autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreError(
                f"cannot connect to {self.where}: {exc}; check the sink's url and that the server is up"
            ) from exc
        except psycopg.ProgrammingError as exc:  # a malformed URL, which libpq's message quotes, password and all
            raise StoreError(f"{self.where}: {redact_text(str(exc)).strip()}; fix the sink's url") from None
        try:
            if self._schema is not None:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))
            if self._read_only:
                conn.execute("SET default_transaction_read_only = on")
        except BaseException:
            conn.close()
            raise
        return conn

    def _exists(self, query: str, params: tuple[Any, ...] = ()) -> bool:
        return self._conn.execute(query, params).fetchone() is not None

    def _version(self) -> int:
        row = self._conn.execute("SELECT coalesce(max(version), 0) FROM streamyolo_schema").fetchone()
        return int(row[0]) if row is not None else 0

    def _migrate(self) -> tuple[int, ...]:
        from psycopg import sql

        with self._conn.transaction():
            # Held until commit: a second sink starting now waits here, then finds the schema up to date.
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            # Looked up before creating: CREATE ... IF NOT EXISTS needs the privilege to create even when there is
            # nothing to create, and a migrated store should need no more than reading and inserting.
            if self._schema is not None and not self._exists(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,)
            ):
                self._conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self._schema)))
            if not self._exists(_HAS_VERSIONS):
                self._conn.execute("CREATE TABLE streamyolo_schema (version INTEGER PRIMARY KEY)")
            pending = pending_migrations(self._version(), self.where)
            for version, statements in pending:
                for statement in statements:
                    self._conn.execute(statement)
                self._conn.execute("INSERT INTO streamyolo_schema (version) VALUES (%s)", (version,))
        return tuple(version for version, _ in pending)

    def _insert(self, inserts: list[tuple[str, list[tuple[Any, ...]]]]) -> int:
        stored = 0
        with self._conn.transaction(), self._conn.cursor() as cursor:
            for i, (statement, rows) in enumerate(inserts):
                cursor.executemany(statement, rows)
                if i == 0:
                    stored = cursor.rowcount
        return stored


STORES.register(PostgresSinkConfig, PostgresStore)
