"""The PostgreSQL store against a real server: schema, idempotent writes, queries, concurrent start, reconnects; a
tracker's events (idempotent on event_id, the events query and its indexes, migration from the results-only schema).

The server is the one at STREAMYOLO_PG_URL (default: a local PostgreSQL, database ``test``, trust auth); the tests are
skipped when it is not reachable. Each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from sink.stores import StoreError, events
from sink.stores.postgres import PostgresSinkConfig, PostgresStore
from sink.stores.sql import (
    LATEST,
    MIGRATIONS,
    RESULT_COLUMNS,
    TIMING_COLUMNS,
    StoredDetection,
    events_query,
    insert_sql,
    result_row,
)
from tests.unit.test_event_stores import E1, E2, E4, E5, E6, EVENTS, check_query_filters, event
from tests.unit.test_stores import BATCH, T0, result

pytestmark = pytest.mark.postgres

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def pg_url() -> str:
    url = os.environ.get("STREAMYOLO_PG_URL", DEFAULT_URL)
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL reachable at STREAMYOLO_PG_URL ({url}): {exc}")
    return url


@pytest.fixture
def admin(pg_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A second connection, outside the store's, to look at and meddle with the server."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def schema(admin: psycopg.Connection[tuple[Any, ...]]) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def cfg(url: str) -> PostgresSinkConfig:
    return PostgresSinkConfig(name="pg", url=url, connect_timeout_s=2)


@pytest.fixture
def store(pg_url: str, schema: str) -> Iterator[PostgresStore]:
    s = PostgresStore(cfg(pg_url), schema=schema)
    s.write(BATCH[::-1])  # newest first, so that only the query's ORDER BY gives the order the tests expect
    yield s
    s.close()


def count(admin: psycopg.Connection[tuple[Any, ...]], schema: str, table: str) -> int:
    row = admin.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
    return int(row.fetchone()[0])


def test_schema_created_in_its_own_schema(pg_url: str, schema: str, admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    s = PostgresStore(cfg(pg_url), schema=schema)
    assert s.migrated == tuple(range(1, LATEST + 1))
    s.close()
    tables = {
        row[0]
        for row in admin.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    }
    assert tables == {"results", "detections", "events", "event_zones", "streamyolo_schema"}
    versions = admin.execute(sql.SQL("SELECT version FROM {}.streamyolo_schema").format(sql.Identifier(schema)))
    assert [v for (v,) in versions] == list(range(1, LATEST + 1))
    again = PostgresStore(cfg(pg_url), schema=schema)
    assert again.migrated == ()
    again.close()


def test_stores_a_batch_once(store: PostgresStore, schema: str, admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    assert (count(admin, schema, "results"), count(admin, schema, "detections")) == (4, 4)
    assert store.write(BATCH) == 0
    assert store.write([*BATCH[:2], result("cam3", 9, "dog"), result("cam3", 9, "dog")]) == 1
    assert store.write([]) == 0
    assert (count(admin, schema, "results"), count(admin, schema, "detections")) == (5, 5)
    row = admin.execute(
        sql.SQL(
            "SELECT seq, width, height, pool, replica, engine, device, batch_size, published_ts, {} "
            "FROM {}.results WHERE stream = 'cam2'"
        ).format(sql.SQL(", ").join(map(sql.Identifier, TIMING_COLUMNS)), sql.Identifier(schema))
    ).fetchone()
    assert row == (1, 1920, 1080, "main", "gpu0-a", "torch", "cuda:0", 4, T0 + 1.05, 3.0, 1.5, 40.0, 0.5, 50.0)


def test_query_filters_and_order(store: PostgresStore, pg_url: str, schema: str) -> None:
    def frames(**kw: Any) -> list[tuple[str, int, str]]:
        return [(d.stream, d.seq, d.label) for d in store.detections(**kw)]

    everything = [("cam1", 0, "person"), ("cam1", 0, "car"), ("cam2", 1, "car"), ("cam1", 3, "person")]
    assert frames() == everything
    assert frames(stream="cam2") == [("cam2", 1, "car")]
    assert frames(label="person") == [("cam1", 0, "person"), ("cam1", 3, "person")]
    assert frames(since=T0 + 1, until=T0 + 3) == [("cam2", 1, "car")]
    assert frames(stream="cam1", label="car", until=T0 + 1) == [("cam1", 0, "car")]
    assert frames(limit=3) == everything[:3]
    assert store.detections(stream="cam1", limit=1) == [
        StoredDetection("cam1", BATCH[0].frame_id, 0, T0, "person", 0, 0.5, (0.0, 20.5, 300.0, 400.25))
    ]
    reader = PostgresStore.open(pg_url, schema=schema)
    assert reader.detections() == store.detections()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        reader.write([result("cam9", 1)])
    reader.close()


def test_open_refuses_a_schema_without_a_store(pg_url: str, schema: str) -> None:
    with pytest.raises(StoreError, match=rf"schema {schema}: schema version 0.*no streamyolo tables"):
        PostgresStore.open(pg_url, schema=schema)


def test_database_newer_than_the_code_is_a_clear_error(
    store: PostgresStore, pg_url: str, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    admin.execute(sql.SQL("INSERT INTO {}.streamyolo_schema VALUES (%s)").format(sql.Identifier(schema)), (LATEST + 1,))
    with pytest.raises(StoreError, match=rf"schema {schema}: the database schema is version {LATEST + 1}, newer"):
        PostgresStore(cfg(pg_url), schema=schema)


def test_sinks_starting_together_migrate_once(pg_url: str, schema: str) -> None:
    starters = 4
    barrier = threading.Barrier(starters)
    migrated: list[tuple[int, ...]] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            s = PostgresStore(cfg(pg_url), schema=schema)
        except BaseException as exc:
            errors.append(exc)
            return
        migrated.append(s.migrated)
        s.close()

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(migrated) == [(), (), (), tuple(range(1, LATEST + 1))]


def terminate(admin: psycopg.Connection[tuple[Any, ...]], store: PostgresStore) -> int:
    """Have the server end the store's connection, as a restart or an idle-session timeout would."""
    pid = store._conn.info.backend_pid
    assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    return pid


def test_lost_connection_is_reconnected_and_the_batch_retried(
    store: PostgresStore, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    old = terminate(admin, store)
    assert store.write([BATCH[0], result("cam3", 7, "dog", "cat")]) == 1
    assert store._conn.info.backend_pid != old
    assert (count(admin, schema, "results"), count(admin, schema, "detections")) == (5, 6)


def test_failed_reconnect_is_a_clear_error_and_the_next_write_reconnects(
    pg_url: str, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    role = f"r_{uuid.uuid4().hex[:12]}"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema), sql.Identifier(role)))
        parts = urlsplit(pg_url)
        as_role = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
        s = PostgresStore(cfg(as_role), schema=schema)
        assert s.write(BATCH[:1]) == 1
        admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
        terminate(admin, s)
        with pytest.raises(StoreError, match=r"lost the connection while storing 1 results.*reconnecting failed"):
            s.write(BATCH[1:2])
        admin.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))
        assert s.write(BATCH[1:2]) == 1  # the caller's retry finds the server back
        s.close()
    finally:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# ---------------------------------------------------------------------------------------------------- events
@pytest.fixture
def event_store(pg_url: str, schema: str) -> Iterator[PostgresStore]:
    s = PostgresStore(PostgresSinkConfig(name="pg", url=pg_url, connect_timeout_s=2, events_of="trk"), schema=schema)
    assert s.write_events(EVENTS[::-1]) == len(EVENTS)  # newest first: only the query's ORDER BY gives the order
    yield s
    s.close()


def test_events_are_stored_once_and_read_back_whole(
    event_store: PostgresStore, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    assert event_store.write_events(EVENTS) == 0
    again = event(n=5, kind="update", at=6, change="loiter", zone="door", zones=("door",))
    assert event_store.write_events([E1, again, again]) == 1  # a redelivery, and one id twice in a batch
    assert (count(admin, schema, "events"), count(admin, schema, "event_zones")) == (len(EVENTS) + 1, 5 + 1)
    assert event_store.events(until=T0 + 6) == EVENTS  # every field, None ones, zones and best shot included


def test_events_query_filters_order_and_indexes(event_store: PostgresStore, pg_url: str, schema: str) -> None:
    check_query_filters(event_store)
    same_frame = [event(track=3, n=n, kind="update", at=7, change="loiter", zone=f"z{n}") for n in range(11)]
    event_store.write_events(same_frame[::-1])
    assert [e.event_id for e in event_store.events(since=T0 + 7)] == [e.event_id for e in same_frame]  # 9 before 10
    reader = PostgresStore.open(pg_url, schema=schema)
    try:
        assert events(reader, label="person", zone="door") == [E2, E4, E5, E6]
    finally:
        reader.close()
    event_store._conn.execute("SET enable_seqscan = off")  # a few rows: the planner would scan; ask what it can use
    text, params = events_query("%s", label="person", zone="door", since=T0, until=T0 + 9, stream=None, event=None,
                                change=None, limit=10)  # fmt: skip
    plan = " ".join(row[0] for row in event_store._conn.execute(f"EXPLAIN {text}", params))
    assert "events_label_time" in plan and "event_zones_pkey" in plan, plan


def test_a_results_schema_is_migrated_and_keeps_its_results(
    pg_url: str, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with psycopg.connect(pg_url, autocommit=True) as old:
        old.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        old.execute("CREATE TABLE streamyolo_schema (version INTEGER PRIMARY KEY)")
        for statement in MIGRATIONS[0]:  # the schema before events (version 1), with results in it
            old.execute(statement)
        old.execute("INSERT INTO streamyolo_schema VALUES (1)")
        with old.cursor() as cursor:
            cursor.executemany(insert_sql("results", RESULT_COLUMNS, "%s"), [result_row(r) for r in BATCH])
    with pytest.raises(StoreError, match=r"schema version 1, this streamyolo reads 2: start its postgres sink once"):
        PostgresStore.open(pg_url, schema=schema)
    s = PostgresStore(cfg(pg_url), schema=schema)
    try:
        assert s.migrated == (2,) == tuple(range(2, LATEST + 1))
        assert s.write(BATCH) == 0  # the results are still there
        assert s.write_events(EVENTS) == len(EVENTS)
    finally:
        s.close()
    assert count(admin, schema, "results") == 4


def test_lost_connection_while_storing_events_is_reconnected(
    event_store: PostgresStore, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    old = terminate(admin, event_store)
    extra = event(n=5, kind="update", at=6, change="loiter", zone="door", zones=("door",))
    assert event_store.write_events([*EVENTS, extra]) == 1
    assert event_store._conn.info.backend_pid != old
    assert count(admin, schema, "events") == len(EVENTS) + 1
