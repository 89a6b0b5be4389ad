"""The wire format: versioned msgpack messages carried in one field of a Redis stream entry.

Every entry holds a single field, ``msg``, whose value is a msgpack map with a version ``v`` and a ``type``.
msgpack is readable from any language (redis-cli shows the bytes; Node.js, Go and Rust have decoders), so outside
clients can subscribe to the result streams. Nothing here ever unpickles.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError

VERSION = 1
FIELD = "msg"
"""The one field of a stream entry that carries the message."""

MAX_SIDE = 16384


class WireError(ValueError):
    """A message that cannot be decoded: malformed, of an unknown version, or of the wrong type or schema."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[str]


Pixels = Annotated[int, Field(ge=1, le=MAX_SIDE)]


class Frame(_Message):
    """One sampled camera frame."""

    kind: ClassVar[str] = "frame"

    stream: str = Field(min_length=1, max_length=128, description="Camera/stream name.")
    seq: int = Field(ge=0, description="Per-stream sequence number of the sampled frame, from 0.")
    capture_ts: float = Field(gt=0, description="Capture time, UNIX seconds.")
    width: Pixels = Field(description="Original frame width, before any resize.")
    height: Pixels = Field(description="Original frame height, before any resize.")
    encoding: Literal["jpeg", "png", "bgr8"] = Field(
        description="jpeg; png (lossless: every pixel as read, for recordings); or raw 8-bit BGR pixels row by row."
    )
    image_width: Pixels = Field(description="Width of the image carried in data (after resize).")
    image_height: Pixels = Field(description="Height of the image carried in data (after resize).")
    data: bytes = Field(min_length=1, description="The encoded image.")
    live: bool = Field(
        True, description="False for a recording read as fast as the detectors take it: never dropped as stale."
    )
    file: str | None = Field(
        None, max_length=4096, description="A recording's frame: the image file, or the video file, it was read from."
    )
    frame_index: int | None = Field(
        None, ge=0, description="A video file's frame: its position in the file, from 0, counting every frame."
    )


Box = tuple[float, float, float, float]


class Detection(BaseModel):
    """One detected object; the box is (xmin, ymin, xmax, ymax) in original-frame pixels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    class_id: int = Field(ge=0)
    score: float = Field(ge=0, le=1)
    box: Box


class Timings(BaseModel):
    """Where a frame's time went, in milliseconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_ms: float = Field(ge=0, description="Capture until the detector read the frame from Redis.")
    decode_ms: float = Field(ge=0, description="Image decode and letterbox.")
    inference_ms: float = Field(ge=0, description="Model time of the batch divided by the batch size.")
    postprocess_ms: float = Field(ge=0, description="Box decoding and NMS.")
    end_to_end_ms: float = Field(ge=0, description="Capture until the result was published.")


class Result(_Message):
    """Detections for one frame, published on the frame's result stream."""

    kind: ClassVar[str] = "result"

    frame_id: str = Field(min_length=3, description="Redis entry id of the frame.")
    stream: str = Field(min_length=1, max_length=128)
    seq: int = Field(ge=0)
    capture_ts: float = Field(gt=0)
    width: Pixels
    height: Pixels
    pool: str = Field(description="Detector pool (consumer group) that produced it.")
    replica: str = Field(description="Detector replica (consumer) that produced it.")
    engine: str
    device: str
    batch_size: int = Field(ge=1)
    published_ts: float = Field(gt=0)
    timings: Timings
    detections: list[Detection]
    file: str | None = Field(None, max_length=4096, description="The frame's file, when it came from a recording.")
    frame_index: int | None = Field(None, ge=0, description="The frame's position in its video file, from 0.")
    behind: int | None = Field(
        None, ge=0, description="Newer frames of its stream that waited when the detector read it (0: the newest)."
    )


class Alert(_Message):
    """A rule's state for one stream and label changed: ``on`` when it fires, ``off`` when it no longer holds."""

    kind: ClassVar[str] = "alert"

    sink: str = Field(min_length=1, description="Alert sink that raised it.")
    rule: str = Field(min_length=1, description="Rule name.")
    stream: str = Field(min_length=1, max_length=128)
    label: str = Field(min_length=1)
    state: Literal["on", "off"] = Field(description="on: the rule fired; off: it stopped holding.")
    frame_id: str = Field(min_length=3, description="Entry id of the frame (in the frames stream) that decided it.")
    seq: int = Field(ge=0)
    capture_ts: float = Field(gt=0)
    raised_ts: float = Field(gt=0, description="When the sink raised it, UNIX seconds.")
    width: Pixels = Field(description="Original frame width; boxes are in its pixels.")
    height: Pixels
    detections: list[Detection] = Field(description="The detections that counted (for on; empty for off).")
    actions: list[str] = Field(description="Names of the actions that deliver it.")
    event_id: str | None = Field(
        None, description="The tracker's event that raised it (alert sinks reading events: events_of); None otherwise."
    )


class TrackedObject(BaseModel):
    """A detection the tracker follows: the detection's fields and the track it belongs to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    track_id: int = Field(ge=1, description="Per camera (and tracker), unique for as long as the tracker has run.")
    label: str
    class_id: int = Field(ge=0)
    score: float = Field(ge=0, le=1)
    box: Box


class Tracks(_Message):
    """One result of a camera with its detections assigned to tracks, in ``seq`` order, on the tracker's tracks
    stream of the camera."""

    kind: ClassVar[str] = "tracks"

    tracker: str = Field(min_length=1, description="Tracker sink that published it.")
    frame_id: str = Field(min_length=3, description="Entry id of the frame (in the frames stream).")
    stream: str = Field(min_length=1, max_length=128)
    seq: int = Field(ge=0)
    capture_ts: float = Field(gt=0)
    width: Pixels
    height: Pixels
    objects: list[TrackedObject] = Field(description="Detections of confirmed tracks (seen min_hits times).")
    untracked: int = Field(ge=0, description="Detections in no confirmed track: too weak, or a track not yet started.")
    skipped: int = Field(ge=0, description="Frames before this one that never came within the reorder window.")


class BestShot(BaseModel):
    """The frame in which an object scored highest so far, and its box there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_id: str = Field(min_length=3, description="Entry id of the frame (in the frames stream, while kept).")
    seq: int = Field(ge=0)
    capture_ts: float = Field(gt=0)
    score: float = Field(ge=0, le=1)
    box: Box


EventType = Literal["start", "update", "end"]
Change = Literal["zone_enter", "zone_leave", "line_cross", "loiter"]


class Event(_Message):
    """Something happened to a tracked object: it started (seen min_hits times), changed (entered or left a zone,
    crossed a line, loitered) or ended (not seen for max_age_s). One per object and happening, never per frame."""

    kind: ClassVar[str] = "event"

    event_id: str = Field(
        min_length=1, description="'{tracker}:{stream}:{track_id}:{n}', n counting the track's events from 0: "
        "the same event has the same id when a redelivery publishes it again (stores keep it once)."
    )  # fmt: skip
    tracker: str = Field(min_length=1, description="Tracker sink that published it.")
    stream: str = Field(min_length=1, max_length=128)
    event: EventType = Field(description="start, update or end (not 'type': that is the envelope's).")
    change: Change | None = Field(None, description="For update: what changed.")
    zone: str | None = Field(None, description="The zone entered, left or loitered in.")
    line: str | None = Field(None, description="The line crossed.")
    direction: Literal["in", "out"] | None = Field(
        None, description="Line crossings: 'in' onto the line's left side, looking from its first point to its second."
    )
    track_id: int = Field(ge=1)
    label: str
    class_id: int = Field(ge=0)
    frame_id: str = Field(min_length=3, description="The frame that decided it (for end: the last one seen).")
    seq: int = Field(ge=0)
    capture_ts: float = Field(gt=0, description="That frame's capture time.")
    score: float = Field(ge=0, le=1, description="The object's score in that frame.")
    box: Box = Field(description="The object's box in that frame.")
    first_seen_ts: float = Field(gt=0, description="Capture time of the track's first frame.")
    last_seen_ts: float = Field(gt=0, description="Capture time of the track's latest frame with the object.")
    duration_s: float = Field(ge=0, description="last_seen_ts - first_seen_ts.")
    zones: list[str] = Field(description="Zones the object is in now (for end: when last seen).")
    best: BestShot
    width: Pixels = Field(description="Original frame width; boxes are in its pixels.")
    height: Pixels


M = TypeVar("M", bound=_Message)


def encode(message: _Message) -> bytes:
    """Pack a message for the ``msg`` field of a stream entry."""
    body: dict[str, Any] = {"v": VERSION, "type": message.kind, **message.model_dump()}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode(raw: bytes | None, expected: type[M]) -> M:
    """Unpack and validate one message; every failure is a :class:`WireError` saying what is wrong."""
    if raw is None:
        raise WireError(f"entry has no '{FIELD}' field")
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise WireError(f"not a msgpack message: {exc}") from None
    if not isinstance(body, dict):
        raise WireError(f"message is a {type(body).__name__}, expected a map")
    version = body.pop("v", None)
    if version != VERSION:
        raise WireError(f"unknown message version {version!r} (this build reads version {VERSION})")
    kind = body.pop("type", None)
    if kind != expected.kind:
        raise WireError(f"message type is {kind!r}, expected {expected.kind!r}")
    try:
        return expected.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise WireError(f"bad {kind}: {problems}") from None
