"""What the SQLite and PostgreSQL stores share: the schema, rows from a :class:`Result` or an :class:`Event`, and the
query text.

The SQL is written once for both databases. ``DOUBLE PRECISION`` and ``BIGINT`` are PostgreSQL types that SQLite
maps to its REAL and INTEGER affinities, and both accept ``INSERT ... ON CONFLICT DO NOTHING`` (SQLite since 3.24),
so the only dialect difference left is the parameter placeholder: ``?`` for sqlite3, ``%s`` for psycopg. The box
columns are x_min .. y_max because PostgreSQL reserves xmin and xmax for system columns.

Each detection row repeats its frame's ``seq`` and ``capture_ts`` (results are never updated), so the detections
query reads one table and its indexes, with no join.

A tracker's events go to ``events``, one row per event (keyed by its deterministic ``event_id``, so a redelivered
event stores nothing), every field a column of its own (the box as x_min .. y_max, the best shot as best_*), the
``zones`` list as a JSON array. ``event_zones`` holds one row per (zone, event) for the event's ``zone`` and each of
its ``zones``: "in a zone" is then one indexed range on both databases, where a JSON or array column would need
each database's own operators and index kinds.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from common.wire import BestShot, Box, Change, Event, EventType, Result
from sink.stores.base import StoreError

Placeholder = Literal["?", "%s"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # version 1
    (
        """CREATE TABLE results (
            stream TEXT NOT NULL,
            frame_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            capture_ts DOUBLE PRECISION NOT NULL,
            published_ts DOUBLE PRECISION NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            pool TEXT NOT NULL,
            replica TEXT NOT NULL,
            engine TEXT NOT NULL,
            device TEXT NOT NULL,
            batch_size INTEGER NOT NULL,
            queue_ms DOUBLE PRECISION NOT NULL,
            decode_ms DOUBLE PRECISION NOT NULL,
            inference_ms DOUBLE PRECISION NOT NULL,
            postprocess_ms DOUBLE PRECISION NOT NULL,
            end_to_end_ms DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (stream, frame_id)
        )""",
        "CREATE INDEX results_stream_time ON results (stream, capture_ts)",
        """CREATE TABLE detections (
            stream TEXT NOT NULL,
            frame_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            seq BIGINT NOT NULL,
            capture_ts DOUBLE PRECISION NOT NULL,
            label TEXT NOT NULL,
            class_id INTEGER NOT NULL,
            score DOUBLE PRECISION NOT NULL,
            x_min DOUBLE PRECISION NOT NULL,
            y_min DOUBLE PRECISION NOT NULL,
            x_max DOUBLE PRECISION NOT NULL,
            y_max DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (stream, frame_id, idx),
            FOREIGN KEY (stream, frame_id) REFERENCES results (stream, frame_id) ON DELETE CASCADE
        )""",
        "CREATE INDEX detections_time ON detections (capture_ts)",
        "CREATE INDEX detections_stream_time ON detections (stream, capture_ts)",
        "CREATE INDEX detections_label_time ON detections (label, capture_ts)",
    ),
    # version 2: a tracker's events
    (
        """CREATE TABLE events (
            event_id TEXT NOT NULL PRIMARY KEY,
            tracker TEXT NOT NULL,
            stream TEXT NOT NULL,
            event TEXT NOT NULL,
            change TEXT,
            zone TEXT,
            line TEXT,
            direction TEXT,
            track_id BIGINT NOT NULL,
            label TEXT NOT NULL,
            class_id INTEGER NOT NULL,
            frame_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            capture_ts DOUBLE PRECISION NOT NULL,
            score DOUBLE PRECISION NOT NULL,
            x_min DOUBLE PRECISION NOT NULL,
            y_min DOUBLE PRECISION NOT NULL,
            x_max DOUBLE PRECISION NOT NULL,
            y_max DOUBLE PRECISION NOT NULL,
            first_seen_ts DOUBLE PRECISION NOT NULL,
            last_seen_ts DOUBLE PRECISION NOT NULL,
            duration_s DOUBLE PRECISION NOT NULL,
            zones TEXT NOT NULL,
            best_frame_id TEXT NOT NULL,
            best_seq BIGINT NOT NULL,
            best_capture_ts DOUBLE PRECISION NOT NULL,
            best_score DOUBLE PRECISION NOT NULL,
            best_x_min DOUBLE PRECISION NOT NULL,
            best_y_min DOUBLE PRECISION NOT NULL,
            best_x_max DOUBLE PRECISION NOT NULL,
            best_y_max DOUBLE PRECISION NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL
        )""",
        "CREATE INDEX events_time ON events (capture_ts)",
        "CREATE INDEX events_stream_time ON events (stream, capture_ts)",
        "CREATE INDEX events_label_time ON events (label, capture_ts)",
        """CREATE TABLE event_zones (
            zone TEXT NOT NULL,
            capture_ts DOUBLE PRECISION NOT NULL,
            event_id TEXT NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
            PRIMARY KEY (zone, capture_ts, event_id)
        )""",
        "CREATE INDEX event_zones_event ON event_zones (event_id)",  # deleting events finds their zone rows
    ),
)
"""The schema, one tuple of statements per version; version N is ``MIGRATIONS[N - 1]``. Only ever append."""

LATEST = len(MIGRATIONS)

TIMING_COLUMNS = ("queue_ms", "decode_ms", "inference_ms", "postprocess_ms", "end_to_end_ms")
RESULT_COLUMNS = (
    "stream",
    "frame_id",
    "seq",
    "capture_ts",
    "published_ts",
    "width",
    "height",
    "pool",
    "replica",
    "engine",
    "device",
    "batch_size",
    *TIMING_COLUMNS,
)
DETECTION_COLUMNS = (
    "stream",
    "frame_id",
    "idx",
    "seq",
    "capture_ts",
    "label",
    "class_id",
    "score",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
)
_QUERY_COLUMNS = tuple(c for c in DETECTION_COLUMNS if c != "idx")
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
EVENT_COLUMNS = (
    "event_id",
    "tracker",
    "stream",
    "event",
    "change",
    "zone",
    "line",
    "direction",
    "track_id",
    "label",
    "class_id",
    "frame_id",
    "seq",
    "capture_ts",
    "score",
    *BOX_COLUMNS,
    "first_seen_ts",
    "last_seen_ts",
    "duration_s",
    "zones",
    "best_frame_id",
    "best_seq",
    "best_capture_ts",
    "best_score",
    *(f"best_{c}" for c in BOX_COLUMNS),
    "width",
    "height",
)
EVENT_ZONE_COLUMNS = ("zone", "capture_ts", "event_id")


@dataclass(frozen=True)
class StoredDetection:
    """One stored detection with its frame's identity and time; the box is in original-frame pixels."""

    stream: str
    frame_id: str
    seq: int
    capture_ts: float
    label: str
    class_id: int
    score: float
    box: Box


def pending_migrations(current: int, where: str) -> list[tuple[int, tuple[str, ...]]]:
    """The (version, statements) still to apply to a database at version ``current``, oldest first."""
    if current > LATEST:
        raise StoreError(
            f"{where}: the database schema is version {current}, newer than version {LATEST} that this streamyolo "
            f"knows: upgrade streamyolo, or point the sink at another database"
        )
    return [(version, MIGRATIONS[version - 1]) for version in range(current + 1, LATEST + 1)]


def insert_sql(table: str, columns: Sequence[str], placeholder: Placeholder) -> str:
    """An insert that skips rows already there, which makes storing a redelivered result a no-op."""
    values = ", ".join([placeholder] * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) ON CONFLICT DO NOTHING"


def result_row(result: Result) -> tuple[Any, ...]:
    """The ``results`` row of a result, in :data:`RESULT_COLUMNS` order."""
    r = result
    timings = tuple(getattr(r.timings, column) for column in TIMING_COLUMNS)
    return (
        r.stream,
        r.frame_id,
        r.seq,
        r.capture_ts,
        r.published_ts,
        r.width,
        r.height,
        r.pool,
        r.replica,
        r.engine,
        r.device,
        r.batch_size,
        *timings,
    )


def detection_rows(result: Result) -> list[tuple[Any, ...]]:
    """The ``detections`` rows of a result, in :data:`DETECTION_COLUMNS` order; idx is the detection's position."""
    r = result
    return [
        (r.stream, r.frame_id, idx, r.seq, r.capture_ts, d.label, d.class_id, d.score, *d.box)
        for idx, d in enumerate(r.detections)
    ]


def event_row(event: Event) -> tuple[Any, ...]:
    """The ``events`` row of an event, in :data:`EVENT_COLUMNS` order."""
    e, best = event, event.best
    return (
        e.event_id,
        e.tracker,
        e.stream,
        e.event,
        e.change,
        e.zone,
        e.line,
        e.direction,
        e.track_id,
        e.label,
        e.class_id,
        e.frame_id,
        e.seq,
        e.capture_ts,
        e.score,
        *e.box,
        e.first_seen_ts,
        e.last_seen_ts,
        e.duration_s,
        json.dumps(e.zones),
        best.frame_id,
        best.seq,
        best.capture_ts,
        best.score,
        *best.box,
        e.width,
        e.height,
    )


def event_zone_rows(event: Event) -> list[tuple[Any, ...]]:
    """The ``event_zones`` rows of an event: its ``zone`` and each of its ``zones``, once each."""
    zones = ([] if event.zone is None else [event.zone]) + event.zones
    return [(zone, event.capture_ts, event.event_id) for zone in dict.fromkeys(zones)]


def stored_event(row: Sequence[Any]) -> Event:
    """A row of the :func:`events_query` (:data:`EVENT_COLUMNS`) as the :class:`Event` that was stored."""
    values = dict(zip(EVENT_COLUMNS, row, strict=True))
    box = tuple(values.pop(c) for c in BOX_COLUMNS)
    best = {c: values.pop(f"best_{c}") for c in ("frame_id", "seq", "capture_ts", "score")}
    best_box = tuple(values.pop(f"best_{c}") for c in BOX_COLUMNS)
    zones = json.loads(values.pop("zones"))
    return Event.model_validate({
        **values, "box": box, "zones": zones, "best": BestShot.model_validate({**best, "box": best_box}),
    })  # fmt: skip


def events_query(
    placeholder: Placeholder,
    *,
    label: str | None,
    zone: str | None,
    since: float | None,
    until: float | None,
    stream: str | None,
    event: EventType | None,
    change: Change | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """The query text and parameters for events whose frame was captured in [since, until), oldest first.

    ``zone`` matches an event about that zone (entered, left, loitered in: its ``zone``) or of an object in it (in its
    ``zones``), through ``event_zones``. Events of one frame come by stream and track, then in the order each track
    had them (ids end with a counter: the shorter id is the earlier one, within a track).
    """
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    conditions: list[str] = []
    params: list[Any] = []
    for condition, value in (
        ("stream =", stream),
        ("capture_ts >=", since),
        ("capture_ts <", until),
        ("label =", label),
        ("event =", event),
        ("change =", change),
    ):
        if value is not None:
            conditions.append(f"{condition} {placeholder}")
            params.append(value)
    if zone is not None:
        # The time bounds again inside: the subquery is then one range of event_zones' primary key.
        inner = [f"zone = {placeholder}"]
        params.append(zone)
        for condition, value in (("capture_ts >=", since), ("capture_ts <", until)):
            if value is not None:
                inner.append(f"{condition} {placeholder}")
                params.append(value)
        conditions.append(f"event_id IN (SELECT event_id FROM event_zones WHERE {' AND '.join(inner)})")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    text = (
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events{where}"
        f" ORDER BY capture_ts, stream, track_id, length(event_id), event_id LIMIT {placeholder}"
    )
    return text, [*params, limit]


def detections_query(
    placeholder: Placeholder,
    *,
    stream: str | None,
    since: float | None,
    until: float | None,
    label: str | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """The query text and parameters for detections captured in [since, until), oldest first.

    Frames are ordered by capture time, then frame id (stream as the last tie-break: ids are unique per stream only),
    and each frame's detections by their position in the result.
    """
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    conditions: list[str] = []
    params: list[Any] = []
    for condition, value in (
        ("stream =", stream),
        ("capture_ts >=", since),
        ("capture_ts <", until),
        ("label =", label),
    ):
        if value is not None:
            conditions.append(f"{condition} {placeholder}")
            params.append(value)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    text = (
        f"SELECT {', '.join(_QUERY_COLUMNS)} FROM detections{where}"
        f" ORDER BY capture_ts, frame_id, stream, idx LIMIT {placeholder}"
    )
    return text, [*params, limit]


def stored_detection(row: Sequence[Any]) -> StoredDetection:
    """A row of the :func:`detections_query` as a :class:`StoredDetection`."""
    stream, frame_id, seq, capture_ts, label, class_id, score, xmin, ymin, xmax, ymax = row
    return StoredDetection(stream, frame_id, seq, capture_ts, label, class_id, score, (xmin, ymin, xmax, ymax))


class DetectionQueries(ABC):
    """The query helpers both SQL stores offer (detections, events); each says its placeholder and runs the text."""

    placeholder: ClassVar[Placeholder]

    @abstractmethod
    def _rows(self, text: str, params: list[Any]) -> Iterable[Sequence[Any]]:
        """Run a query on the store's connection."""

    @abstractmethod
    def close(self) -> None:
        """Release the file or connection."""

    def detections(
        self,
        stream: str | None = None,
        since: float | None = None,
        until: float | None = None,
        label: str | None = None,
        limit: int = 1000,
    ) -> list[StoredDetection]:
        """Detections captured in [since, until), of one stream and label if given, oldest first."""
        text, params = detections_query(
            self.placeholder, stream=stream, since=since, until=until, label=label, limit=limit
        )
        return [stored_detection(row) for row in self._rows(text, params)]

    def events(
        self,
        label: str | None = None,
        zone: str | None = None,
        since: float | None = None,
        until: float | None = None,
        stream: str | None = None,
        event: EventType | None = None,
        change: Change | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """Events whose frame was captured in [since, until), oldest first; of one label, about or in one zone (its
        ``zone`` or one of its ``zones``), of one stream, of one kind (start, update, end) and change, if given."""
        text, params = events_query(
            self.placeholder, label=label, zone=zone, since=since, until=until, stream=stream, event=event,
            change=change, limit=limit,
        )  # fmt: skip
        return [stored_event(row) for row in self._rows(text, params)]
