"""The tracker sink: results in, tracked objects and their events out (``kind: tracker``).

Each camera's results are put back in ``seq`` order (``reorder``), run through a ByteTrack-class tracker
(``bytetrack``), and turned into events and counts against the camera's zones and lines (``events``, ``zones``);
each camera's tracks and events are published on streams of their own. Several replicas split the cameras: one
owner per camera at a time, under a lease in Redis, with its state checkpointed with every batch (``runner``).

This module declares the sink's settings and registers its kind (see ``common.plugins``); it imports nothing else.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from common.plugins import SINKS
from common.settings import ConsumerSinkSettings, Name, RelativePoint, Strict, unique_names


class ZoneConfig(Strict):
    """An area of a camera's picture: objects entering and leaving it are events, and counted."""

    name: Name = Field(description="Zone name; appears in events and counts.")
    polygon: list[RelativePoint] = Field(
        min_length=3, max_length=100, description="Corners in relative coordinates (0-1, x right, y down)."
    )
    loiter_s: float | None = Field(
        None, gt=0, le=86_400, description="An object staying in the zone this long is an event (once per visit)."
    )
    labels: list[str] = Field(default_factory=list, description="Labels this zone cares about; empty: every label.")


class LineConfig(Strict):
    """A segment of a camera's picture: objects crossing it are events, counted per direction."""

    name: Name = Field(description="Line name; appears in events and counts.")
    points: tuple[RelativePoint, RelativePoint] = Field(
        description="From and to, relative coordinates. Crossing onto the left side, looking from the first point to "
        "the second, is 'in'; onto the right side 'out' (swap the points to swap them)."
    )
    labels: list[str] = Field(default_factory=list, description="Labels this line cares about; empty: every label.")

    @model_validator(mode="after")
    def _a_segment(self) -> Self:
        if self.points[0] == self.points[1]:
            raise ValueError(f"line {self.name!r} has both points at {self.points[0]}: it needs two different points")
        return self


class CameraAreas(Strict):
    """The zones and lines of one camera (or of every camera matching a pattern)."""

    zones: Annotated[list[ZoneConfig], unique_names("zone")] = Field(default_factory=list, max_length=100)
    lines: Annotated[list[LineConfig], unique_names("line")] = Field(default_factory=list, max_length=100)


class TrackerSinkConfig(ConsumerSinkSettings):
    """Multi-object tracking of each camera's results, with events and counts over its zones and lines."""

    kind: Literal["tracker"] = "tracker"
    labels: list[str] = Field(default_factory=list, description="Labels tracked; empty: every label.")
    # --- association (ByteTrack): strong detections first, then weak ones for the tracks left over
    high_score: float = Field(0.5, gt=0, le=1, description="Detections scoring this much are matched first.")
    low_score: float = Field(
        0.1, ge=0, le=1, description="Weaker detections (down to this) only keep existing tracks alive."
    )
    new_track_score: float = Field(0.6, gt=0, le=1, description="An unmatched detection starts a track from this.")
    match_iou: float = Field(0.2, gt=0, lt=1, description="Least IoU of a strong detection with a track's prediction.")
    low_match_iou: float = Field(0.5, gt=0, lt=1, description="Least IoU for the weak detections' second round.")
    lost_buffer: float = Field(
        0.4, ge=0, le=2, description="A lost track is matched on boxes grown by this share of their size on every side "
        "(buffered IoU: its prediction drifts over a gap); 0: plain IoU."
    )  # fmt: skip
    recover_radius: float = Field(
        1.0, ge=0, le=100, description="A strong detection that would start a track is given to a lost track of its "
        "class whose prediction is within this many box sizes, growing with each second lost (occlusions); 0: off."
    )  # fmt: skip
    min_hits: int = Field(3, ge=1, le=1000, description="Frames a track needs before it is confirmed (its start).")
    max_age_s: float = Field(
        5.0, gt=0, le=3600, description="A track not seen this long ends (by capture time: sampled frame rates vary)."
    )
    anchor: Literal["bottom_center", "center"] = Field(
        "bottom_center", description="The point of a box that is in a zone or crosses a line: feet, or centre."
    )
    cameras: dict[str, CameraAreas] = Field(
        default_factory=dict,
        max_length=10_000,
        description="Zones and lines per camera name or glob pattern; a camera takes the first that matches.",
    )
    # --- order, ownership, output
    reorder_frames: int = Field(
        16, ge=0, le=10_000, description="A missing frame is waited for while fewer than this many follow it."
    )
    reorder_ms: int = Field(1000, ge=0, le=600_000, description="... and at most this long.")
    lease_s: float = Field(
        5.0, ge=1, le=600, description="A camera's owner renews its lease within this; a dead owner's cameras move."
    )
    tracks_maxlen: int = Field(100_000, ge=100, le=10_000_000, description="Entries kept per tracks stream.")
    events_maxlen: int = Field(100_000, ge=100, le=10_000_000, description="Entries kept per events stream.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.low_score <= self.high_score:
            raise ValueError(f"low_score ({self.low_score}) must not exceed high_score ({self.high_score})")
        if self.block_ms > self.lease_s * 1000 / 3:
            raise ValueError(
                f"block_ms ({self.block_ms}) must be at most a third of lease_s ({self.lease_s} s): leases are renewed "
                "between reads, and must be before they run out"
            )
        return self

    def areas(self, stream: str) -> CameraAreas:
        """The zones and lines of one camera: the first entry of ``cameras`` whose name or pattern matches."""
        from common.keys import matches

        for pattern, areas in self.cameras.items():
            if matches(stream, [pattern]):
                return areas
        return CameraAreas()


SINKS.register(TrackerSinkConfig, "sink.tracker.runner:run")
