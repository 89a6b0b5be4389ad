"""Stores keeping a tracker's events: the SQLite and JSONL stores on real files (schema, migration from the results-only
schema, idempotence on event_id, the events query), the config's checks, and the query's command line."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import ValidationError

from common.config import ConfigError, parse_config
from common.settings import StoreSettings
from common.wire import BestShot, Change, Event, EventType
from sink.stores import StoreError, create_event_store, events, open_store
from sink.stores.__main__ import main as query_main
from sink.stores.jsonl import JsonlSinkConfig, JsonlStore
from sink.stores.sql import (
    DETECTION_COLUMNS,
    LATEST,
    MIGRATIONS,
    RESULT_COLUMNS,
    detection_rows,
    insert_sql,
    result_row,
)
from sink.stores.sqlite import SqliteSinkConfig, SqliteStore
from tests.unit.test_stores import BATCH, table_counts

T0 = 1_700_000_000.0
BEST_BOX = (11.0, 21.0, 111.0, 221.0)


def event(
    stream: str = "cam1",
    track: int = 1,
    n: int = 0,
    kind: EventType = "start",
    at: float = 0.0,
    *,
    change: Change | None = None,
    zone: str | None = None,
    line: str | None = None,
    direction: Literal["in", "out"] | None = None,
    zones: tuple[str, ...] = (),
    label: str = "person",
    best_score: float = 0.9,
) -> Event:
    """Event ``n`` of track ``track`` of ``stream``, decided by a frame captured at T0 + ``at``."""
    ts = T0 + at
    return Event(
        event_id=f"trk:{stream}:{track}:{n}",
        tracker="trk",
        stream=stream,
        event=kind,
        change=change,
        zone=zone,
        line=line,
        direction=direction,
        track_id=track,
        label=label,
        class_id=0 if label == "person" else 2,
        frame_id=f"{round(ts * 1000)}-{track}",
        seq=round(at * 10),
        capture_ts=ts,
        score=0.625,
        box=(10.5 * track, 20.25, 110.0, 220.125 + n),
        first_seen_ts=T0,
        last_seen_ts=ts,
        duration_s=at,
        zones=list(zones),
        best=BestShot(frame_id=f"{round(T0 * 1000)}-{track}", seq=0, capture_ts=T0, score=best_score, box=BEST_BOX),
        width=1920,
        height=1080,
    )


# One person on cam1 (track 1): starts outside, enters the door zone, crosses the gate line in it, leaves, ends;
# a car on cam1 (track 2) in the lot; a person on cam2 that starts in cam2's own door zone.
EVENTS = [
    event(at=0),
    event(n=1, kind="update", at=1, change="zone_enter", zone="door", zones=("door",)),
    event(track=2, at=1, zones=("lot",), label="car"),
    event("cam2", at=2, zones=("door",)),
    event(n=2, kind="update", at=3, change="line_cross", line="gate", direction="in", zones=("door",)),
    event(n=3, kind="update", at=4, change="zone_leave", zone="door"),
    event(n=4, kind="end", at=5),
]
E1, E2, E3, E4, E5, E6, E7 = EVENTS


def sqlite_cfg(path: Path) -> SqliteSinkConfig:
    return SqliteSinkConfig(name="db", path=path, busy_timeout_s=2, events_of="trk")


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(sqlite_cfg(tmp_path / "events.db"))
    assert s.write_events(EVENTS[::-1]) == len(EVENTS)  # newest first: only the query's ORDER BY gives the order
    return s


def ids(found: list[Event]) -> list[str]:
    return [e.event_id for e in found]


def check_query_filters(queries: Any) -> None:
    """The events query's filters and order, on a store holding :data:`EVENTS` (shared with PostgreSQL's test)."""

    def query(**kw: Any) -> list[str]:
        return ids(queries.events(**kw))

    assert query() == ids(EVENTS)
    # "Events of a label in a zone between two times": about the zone (E2 entered, E6 left) or in it (E4, E5).
    assert query(label="person", zone="door") == ids([E2, E4, E5, E6])
    assert query(label="person", zone="door", since=T0 + 2, until=T0 + 4) == ids([E4, E5])  # until is exclusive
    assert query(zone="lot") == ids([E3])
    assert query(label="car", zone="door") == []
    assert query(since=T0 + 1, until=T0 + 4) == ids([E2, E3, E4, E5])
    assert query(stream="cam2") == ids([E4])
    assert query(event="end") == ids([E7])
    assert query(event="update", change="zone_enter") == ids([E2])
    assert query(zone="nowhere") == []
    assert query(limit=2) == ids([E1, E2])
    with pytest.raises(ValueError, match="limit"):
        queries.events(limit=-1)


# ---------------------------------------------------------------------------------------------------- sqlite
def test_events_are_stored_and_read_back_whole(store: SqliteStore) -> None:
    assert store.events() == EVENTS  # every field, the None ones, the zones and the best shot included
    db = sqlite3.connect(store.path)
    row = db.execute(
        "SELECT zones, best_frame_id, best_score, x_min, direction FROM events WHERE line = 'gate'"
    ).fetchone()
    zone_rows = db.execute("SELECT zone, event_id FROM event_zones ORDER BY capture_ts, zone, event_id").fetchall()
    db.close()
    assert row == ('["door"]', E5.best.frame_id, 0.9, 10.5, "in")
    assert zone_rows == [
        ("door", E2.event_id),  # its zone and its zones name one zone: one row
        ("lot", E3.event_id),
        ("door", E4.event_id),
        ("door", E5.event_id),
        ("door", E6.event_id),
    ]


def test_storing_events_is_idempotent_on_their_id(store: SqliteStore) -> None:
    assert store.write_events(EVENTS) == 0
    again = event(n=5, kind="update", at=6, change="loiter", zone="door", zones=("door",))
    assert store.write_events([E1, again, again]) == 1  # a redelivery, and one id twice in a batch
    assert store.write_events([]) == 0
    store.close()
    db = sqlite3.connect(store.path)
    counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events", "event_zones")]
    db.close()
    assert counts == [len(EVENTS) + 1, 5 + 1]


def test_query_filters_and_order(store: SqliteStore) -> None:
    check_query_filters(store)


def test_events_of_one_frame_come_in_the_order_their_track_had_them(tmp_path: Path) -> None:
    s = SqliteStore(sqlite_cfg(tmp_path / "e.db"))
    # Ten events of track 3 in one frame: ids ...:3:10 sorts before ...:3:9 as text, not as the track had them.
    same_frame = [event(track=3, n=n, kind="update", at=7, change="loiter", zone=f"z{n}") for n in range(11)]
    s.write_events([*same_frame[::-1], event(track=2, n=4, kind="end", at=7)])
    assert ids(s.events(since=T0 + 7)) == ["trk:cam1:2:4", *ids(same_frame)]
    s.close()


def test_the_query_uses_the_indexes(store: SqliteStore) -> None:
    def plan(**kw: Any) -> str:
        from sink.stores.sql import events_query

        text, params = events_query("?", **({"label": None, "zone": None, "since": None, "until": None, "stream": None,
                                             "event": None, "change": None, "limit": 10} | kw))  # fmt: skip
        return " | ".join(str(row[-1]) for row in store._db.execute(f"EXPLAIN QUERY PLAN {text}", params))

    assert "events_label_time" in plan(label="person", since=T0, until=T0 + 9)
    zone_plan = plan(label="person", zone="door", since=T0, until=T0 + 9)
    assert "event_zones" in zone_plan and "SCAN event_zones" not in zone_plan, zone_plan
    assert "events_stream_time" in plan(stream="cam1", since=T0)


def test_a_results_database_is_migrated_and_keeps_its_results(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:  # the schema before events (version 1), with results in it
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.executemany(insert_sql("results", RESULT_COLUMNS, "?"), [result_row(r) for r in BATCH])
    old.executemany(insert_sql("detections", DETECTION_COLUMNS, "?"), [d for r in BATCH for d in detection_rows(r)])
    old.close()
    with pytest.raises(StoreError, match=r"schema version 1, this streamyolo reads 2: start its sqlite sink once"):
        SqliteStore.open(path)
    migrated = SqliteStore(sqlite_cfg(path))
    assert migrated.migrated == (2,) == tuple(range(2, LATEST + 1))
    assert migrated.write_events(EVENTS) == len(EVENTS)
    assert migrated.write(BATCH) == 0  # the results are still there
    migrated.close()
    assert table_counts(path) == (4, 4)
    assert ids(events(path, label="car")) == ids([E3])
    reader = SqliteStore.open(path)
    assert len(reader.detections()) == 4
    reader.close()


def test_open_store_and_events_take_a_path_or_a_store(store: SqliteStore) -> None:
    reader = open_store(str(store.path))
    assert ids(events(reader, stream="cam2")) == ids([E4])
    reader.close()
    assert ids(events(store.path, event="end")) == ids([E7])
    with pytest.raises(StoreError, match="no such database file"):
        events(store.path.with_name("missing.db"))
    jsonl = JsonlSinkConfig(name="lines", path=store.path.with_name("e.jsonl"), events_of="trk")
    with pytest.raises(StoreError, match="the jsonl store has no queries"):
        open_store(jsonl)


# ---------------------------------------------------------------------------------------------------- jsonl
def jsonl_cfg(path: Path) -> JsonlSinkConfig:
    return JsonlSinkConfig(name="lines", path=path, events_of="trk")


def test_jsonl_keeps_each_event_once_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    s = create_event_store(jsonl_cfg(path))
    assert s.write_events(EVENTS[:3]) == 3
    assert s.write_events([E3, E4, E4]) == 1
    s.close()
    again = JsonlStore(jsonl_cfg(path))
    assert again.write_events(EVENTS) == 3
    with pytest.raises(StoreError, match="keeps events, not results"):
        again.write(BATCH)
    again.close()
    lines = [Event.model_validate(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == EVENTS


def test_jsonl_files_hold_one_kind(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    written = JsonlStore(JsonlSinkConfig(name="lines", path=results))
    written.write(BATCH[:1])
    written.close()
    with pytest.raises(StoreError, match=r"results\.jsonl:1: not an event line"):
        JsonlStore(jsonl_cfg(results))
    events_file = tmp_path / "events.jsonl"
    written = JsonlStore(jsonl_cfg(events_file))
    written.write_events(EVENTS[:1])
    written.close()
    with pytest.raises(StoreError, match=r"events\.jsonl:1: not a result line"):
        JsonlStore(JsonlSinkConfig(name="lines", path=events_file))


def test_jsonl_event_cut_short_is_removed_and_stored_again(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    written = JsonlStore(jsonl_cfg(path))
    written.write_events(EVENTS[:1])
    written.close()
    whole = json.dumps(E2.model_dump(mode="json"))
    with path.open("a", encoding="utf-8") as f:
        f.write(whole[: len(whole) // 2])  # the sink died while writing it
    again = JsonlStore(jsonl_cfg(path))
    assert again.write_events(EVENTS[:2]) == 1
    again.close()
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2


# ---------------------------------------------------------------------------------------------------- config
class LinesSinkConfig(StoreSettings):
    """A store kind that keeps results only (as a third party's plug-in may be)."""

    kind: Literal["lines"] = "lines"


class EventLinesSinkConfig(LinesSinkConfig):
    keeps_events: ClassVar[bool] = True


def test_a_store_kind_that_cannot_keep_events_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"events_of\n.*the lines store cannot keep a tracker's events"):
        LinesSinkConfig(name="x", events_of="trk")
    assert LinesSinkConfig(name="x").events_of is None
    assert EventLinesSinkConfig(name="x", events_of="trk").events_of == "trk"


STACK = textwrap.dedent(
    """\
    sinks:
      - {kind: tracker, name: trk}
      - {kind: web, name: view}
      - {kind: sqlite, name: db, path: e.db, events_of: EVENTS_OF}
    """
)


@pytest.mark.parametrize(
    ("events_of", "why"),
    [("nobody", "'nobody' is no sink of that name"), ("view", "'view' is a sink of kind web")],
)
def test_events_of_must_name_a_tracker_sink(events_of: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(STACK.replace("EVENTS_OF", events_of), source="stack.yaml")
    assert info.value.problems == [
        f"stack.yaml:2: sinks: Value error, sinks[2] (db).events_of: {why}, not a tracker sink: name a sink of kind "
        f"tracker (here: trk)"
    ]
    stack = parse_config(STACK.replace("EVENTS_OF", "trk"))
    assert stack.sink("db").events_of == "trk"


# ---------------------------------------------------------------------------------------------------- command line
def test_query_command_prints_json_lines(
    store: SqliteStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text(STACK.replace("EVENTS_OF", "trk").replace("e.db", str(store.path)))
    args = ["query", "--config", str(config), "--label", "person", "--zone", "door", "--since", str(T0 + 2)]
    assert query_main(args) == 0
    printed = [Event.model_validate(json.loads(line)) for line in capsys.readouterr().out.splitlines()]
    assert printed == [E4, E5, E6]
    until = "2023-11-14T22:13:24+00:00"  # T0 + 4, as ISO 8601
    assert query_main(["query", "--db", str(store.path), "--until", until, "--stream", "cam1", "--limit", "2"]) == 0
    assert [json.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()] == ids([E1, E2])


def test_query_command_errors_say_what_to_do(
    store: SqliteStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text(STACK.replace("EVENTS_OF", "trk").replace("e.db", str(store.path)))
    assert query_main(["query", "--config", str(config), "--sink", "view"]) == 2
    assert "--sink view: a web sink that keeps no events" in capsys.readouterr().err
    assert query_main(["query", "--db", str(tmp_path / "none.db")]) == 1
    assert "none.db: no such database file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        query_main(["query", "--db", str(store.path), "--since", "yesterday"])
    assert "'yesterday' is neither UNIX seconds nor an ISO 8601 time" in capsys.readouterr().err
