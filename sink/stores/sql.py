"""What the SQLite and PostgreSQL stores share: the schema, rows from a :class:`Result`, and the query text.

The SQL is written once for both databases. ``DOUBLE PRECISION`` and ``BIGINT`` are PostgreSQL types that SQLite
maps to its REAL and INTEGER affinities, and both accept ``INSERT ... ON CONFLICT DO NOTHING`` (SQLite since 3.24),
so the only dialect difference left is the parameter placeholder: ``?`` for sqlite3, ``%s`` for psycopg. The box
columns are x_min .. y_max because PostgreSQL reserves xmin and xmax for system columns.

Each detection row repeats its frame's ``seq`` and ``capture_ts`` (results are never updated), so the detections
query reads one table and its indexes, with no join.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from common.wire import Box, Result
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
    """The query helper both SQL stores offer; each says its placeholder and runs the text."""

    placeholder: ClassVar[Placeholder]

    @abstractmethod
    def _rows(self, text: str, params: list[Any]) -> Iterable[Sequence[Any]]:
        """Run a query on the store's connection."""

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
