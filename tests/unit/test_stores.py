"""The SQLite and JSONL stores on real files: schema, idempotent writes, queries, reopening, crash leftovers."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from common.wire import Detection, Result, Timings
from sink.stores import StoreError, create_store
from sink.stores.jsonl import JsonlSinkConfig, JsonlStore
from sink.stores.postgres import PostgresSinkConfig
from sink.stores.sql import LATEST, TIMING_COLUMNS, StoredDetection
from sink.stores.sqlite import SqliteSinkConfig, SqliteStore

T0 = 1_700_000_000.0


def result(stream: str, seq: int, *labels: str, ts: float | None = None) -> Result:
    """A result of frame ``seq`` captured at T0 + seq seconds, with one detection per label."""
    capture_ts = T0 + seq if ts is None else ts
    return Result(
        frame_id=f"{int(capture_ts * 1000)}-0",
        stream=stream,
        seq=seq,
        capture_ts=capture_ts,
        width=1920,
        height=1080,
        pool="main",
        replica="gpu0-a",
        engine="torch",
        device="cuda:0",
        batch_size=4,
        published_ts=capture_ts + 0.05,
        timings=Timings(queue_ms=3, decode_ms=1.5, inference_ms=40, postprocess_ms=0.5, end_to_end_ms=50),
        detections=[
            Detection(label=label, class_id=i, score=0.5 + i / 10, box=(10.0 * i, 20.5, 300.0, 400.25 + i))
            for i, label in enumerate(labels)
        ],
    )


BATCH = [
    result("cam1", 0, "person", "car"),
    result("cam2", 1, "car"),
    result("cam1", 2),
    result("cam1", 3, "person"),
]


def sqlite_cfg(path: Path) -> SqliteSinkConfig:
    return SqliteSinkConfig(name="db", path=path, busy_timeout_s=2)


def table_counts(path: Path) -> tuple[int, int]:
    db = sqlite3.connect(path)
    results = db.execute("SELECT count(*) FROM results").fetchone()[0]
    detections = db.execute("SELECT count(*) FROM detections").fetchone()[0]
    db.close()
    return results, detections


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(sqlite_cfg(tmp_path / "sub" / "results.db"))
    s.write(BATCH[::-1])  # newest first, so that only the query's ORDER BY gives the order the tests expect
    return s


# ---------------------------------------------------------------------------------------------------- sqlite
def test_sqlite_creates_folder_file_and_schema_in_wal(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "r.db"
    s = SqliteStore(sqlite_cfg(path))
    assert s.migrated == tuple(range(1, LATEST + 1))
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    db.close()
    assert {"results", "detections"} <= tables
    assert {"results_stream_time", "detections_stream_time", "detections_label_time"} <= indexes


def test_sqlite_stores_a_batch_with_its_detections(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    s = SqliteStore(sqlite_cfg(path))
    assert s.write(BATCH) == 4
    assert table_counts(path) == (4, 4)
    first = s.detections(stream="cam1", limit=2)
    assert first == [
        StoredDetection("cam1", BATCH[0].frame_id, 0, T0, "person", 0, 0.5, (0.0, 20.5, 300.0, 400.25)),
        StoredDetection("cam1", BATCH[0].frame_id, 0, T0, "car", 1, 0.6, (10.0, 20.5, 300.0, 401.25)),
    ]
    s.close()
    db = sqlite3.connect(path)
    columns = ", ".join(["seq", "width", "height", "pool", "replica", "engine", "device", "batch_size"])
    timings = ", ".join(TIMING_COLUMNS)
    row = db.execute(f"SELECT {columns}, published_ts, {timings} FROM results WHERE stream = 'cam2'").fetchone()
    db.close()
    assert row == (1, 1920, 1080, "main", "gpu0-a", "torch", "cuda:0", 4, T0 + 1.05, 3.0, 1.5, 40.0, 0.5, 50.0)


def test_sqlite_writing_the_same_results_again_stores_nothing_new(store: SqliteStore) -> None:
    assert store.write(BATCH) == 0
    assert store.write([*BATCH[:2], result("cam3", 9, "dog"), result("cam3", 9, "dog")]) == 1
    assert store.write([]) == 0
    store.close()
    assert table_counts(store.path) == (5, 5)


def test_sqlite_query_filters_and_order(store: SqliteStore) -> None:
    def frames(**kw: Any) -> list[tuple[str, int, str]]:
        return [(d.stream, d.seq, d.label) for d in store.detections(**kw)]

    everything = [("cam1", 0, "person"), ("cam1", 0, "car"), ("cam2", 1, "car"), ("cam1", 3, "person")]
    assert frames() == everything
    assert frames(stream="cam2") == [("cam2", 1, "car")]
    assert frames(label="person") == [("cam1", 0, "person"), ("cam1", 3, "person")]
    assert frames(since=T0 + 1, until=T0 + 3) == [("cam2", 1, "car")]  # since inclusive, until exclusive
    assert frames(since=T0 + 1) == everything[2:]
    assert frames(stream="cam1", label="car", until=T0 + 1) == [("cam1", 0, "car")]
    assert frames(limit=3) == everything[:3]
    assert frames(stream="nope") == []
    with pytest.raises(ValueError, match="limit"):
        store.detections(limit=-1)


def test_sqlite_reopening_keeps_data_and_migrates_nothing(store: SqliteStore) -> None:
    store.close()
    again = SqliteStore(sqlite_cfg(store.path))
    assert again.migrated == ()
    assert len(again.detections()) == 4
    assert again.write(BATCH) == 0
    again.close()


def test_sqlite_sinks_starting_together_migrate_once(tmp_path: Path) -> None:
    starters = 4
    barrier = threading.Barrier(starters)
    migrated: list[tuple[int, ...]] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            s = SqliteStore(sqlite_cfg(tmp_path / "r.db"))
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


def test_sqlite_open_reads_an_existing_database_read_only(store: SqliteStore) -> None:
    reader = SqliteStore.open(store.path)
    assert reader.detections(label="car") == store.detections(label="car")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.write([result("cam9", 1)])
    reader.close()
    store.close()


def test_sqlite_open_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"missing\.db: no such database file"):
        SqliteStore.open(tmp_path / "missing.db")
    sqlite3.connect(tmp_path / "other.db").close()  # an empty SQLite file, user_version 0
    with pytest.raises(StoreError, match=r"other\.db: schema version 0.*not a streamyolo database"):
        SqliteStore.open(tmp_path / "other.db")


def test_sqlite_database_newer_than_the_code_is_a_clear_error(store: SqliteStore) -> None:
    store._db.execute(f"PRAGMA user_version = {LATEST + 1}")
    store.close()
    message = rf"{store.path}: the database schema is version {LATEST + 1}, newer than version {LATEST}.*upgrade"
    with pytest.raises(StoreError, match=message):
        SqliteStore(sqlite_cfg(store.path))
    with pytest.raises(StoreError, match=message):
        SqliteStore.open(store.path)


def test_sqlite_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, just text that is long enough to fill a header page " * 10)
    with pytest.raises(StoreError, match=r"notes\.txt: cannot open the SQLite database: file is not a database"):
        SqliteStore(sqlite_cfg(path))


# ---------------------------------------------------------------------------------------------------- jsonl
def jsonl_cfg(path: Path) -> JsonlSinkConfig:
    return JsonlSinkConfig(name="file", path=path)


def stored_lines(path: Path) -> list[Result]:
    return [Result.model_validate(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_is_idempotent_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.jsonl"
    s = JsonlStore(jsonl_cfg(path))
    assert s.write(BATCH[:2]) == 2
    assert s.write([BATCH[1], BATCH[2], BATCH[2]]) == 1
    s.close()
    again = JsonlStore(jsonl_cfg(path))
    assert again.write(BATCH) == 1
    again.close()
    assert stored_lines(path) == [BATCH[0], BATCH[1], BATCH[2], BATCH[3]]


def test_jsonl_tolerates_a_last_line_cut_short(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "results.jsonl"
    s = JsonlStore(jsonl_cfg(path))
    s.write(BATCH[:2])
    s.close()
    whole = json.dumps(BATCH[2].model_dump(mode="json"))
    with path.open("a", encoding="utf-8") as f:
        f.write(whole[: len(whole) // 2])  # the sink died while writing the third line
    with caplog.at_level(logging.WARNING, logger="sink.jsonl"):
        again = JsonlStore(jsonl_cfg(path))
    assert f"{path}: line 3 is cut short" in caplog.text
    assert again.write(BATCH[1:3]) == 1  # the cut-short result was never acked: it comes again and is stored
    again.close()
    assert stored_lines(path) == BATCH[:3]


def test_jsonl_refuses_a_file_that_is_not_its_own(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"stream": "cam1", "frame_id": "1-0"}\nhello\n{"stream": "cam1", "frame_id": "2-0"}\n')
    with pytest.raises(StoreError, match=r"results\.jsonl:2: not a result line"):
        JsonlStore(jsonl_cfg(path))


# ---------------------------------------------------------------------------------------------------- shared
def test_create_store_picks_the_backend_by_kind(tmp_path: Path) -> None:
    jsonl = create_store(jsonl_cfg(tmp_path / "r.jsonl"))
    sqlite = create_store(sqlite_cfg(tmp_path / "r.db"))
    assert isinstance(jsonl, JsonlStore) and isinstance(sqlite, SqliteStore)
    jsonl.close()
    sqlite.close()
    unreachable = PostgresSinkConfig(name="pg", url="postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=1)
    with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL 127\.0\.0\.1:1/none"):
        create_store(unreachable)


def test_result_columns_cover_every_timing() -> None:
    assert set(TIMING_COLUMNS) == set(Timings.model_fields)
