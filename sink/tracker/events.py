"""One camera's tracked objects turned into messages: the tracks of each result, events, counts and occupancy.

:class:`EventMaker` takes each result of a camera in ``seq`` order, with what the tracker made of it
(:class:`~sink.tracker.bytetrack.FrameTracks`), and returns an :class:`Outcome`.

Semantics (the contract of the tracks and events streams and of the counts hash):

- Every track is followed from its first matched detection, tentative too: its label and class id (those of that
  first detection, for good), first and last sighting, best shot (the highest score so far; a tie keeps the earlier
  frame), its anchor point (``anchor``: the middle of the box's bottom edge, or its centre, relative to the frame),
  the zones the anchor is in and since when (the capture time of the first frame found inside, this visit), and
  the side of each line it was last on. Positions are only known in frames the object is matched in: zones, lines
  and loitering are decided there, never in frames it is missed.
- ``start``: the first frame the track is confirmed (seen ``min_hits`` times). ``zones`` are the zones it is in
  then. Counts ``tracks:{label}`` and, for each of those zones, ``entered:{zone}:{label}`` (an object that
  appears inside a zone has entered it).
- ``update``, from the start frame on (never for a tentative track):
  ``zone_enter`` / ``zone_leave`` when the anchor's zone membership changes (counts ``entered:{zone}:{label}`` /
  ``left:{zone}:{label}``); ``line_cross`` with ``line`` and ``direction`` when the anchor moved across a line
  between two consecutive matched frames (see ``sink.tracker.zones`` for sides, ``in`` and ``out``, and a stop on
  the line), counts ``crossed:{line}:{direction}:{label}``; a move into the start frame counts, moves between
  tentative frames do not; ``loiter`` in a zone with ``loiter_s`` set, in the first matched frame at least
  ``loiter_s`` (by capture time) after the visit began, once per visit (leaving and coming back is a new visit).
- ``end``: for each confirmed track the tracker ended (not seen for more than ``max_age_s``). Its frame, box and
  score are those of the last sighting, ``zones`` those it was in then; each of them counts as left
  (``left:{zone}:{label}``), so that per zone and label ``entered - left`` equals the objects in it now. Tentative
  tracks end silently (the tracker does not report them; their records are dropped once not seen for more than
  ``max_age_s``).
- Within one result, events are in this order: ends first (their objects were last seen in earlier frames), then
  per matched detection in the tracker's order: start, zone_leave, zone_enter, line_cross, loiter (zones and lines
  in configuration order).
- Every event carries ``event_id = '{tracker}:{stream}:{track_id}:{n}'``, n counting the track's events from 0
  (the same frames from the same state give the same ids); the deciding frame's frame_id, seq, capture_ts and the
  object's score and box there (end: the last sighting), ``first_seen_ts``, ``last_seen_ts``,
  ``duration_s = last - first``, the zones it is in, its best shot, and the frame's width and height.
- Occupancy, the current value of every field (a field once non-zero stays reported, so a reader sees it drop to
  0): ``now:{zone}:{label}`` the confirmed, not ended tracks whose last anchor is in the zone; ``now:*:{label}``
  the confirmed, not ended tracks of the label anywhere. Zone and line names never hold ':' and the label is the
  last part of every counts field: ``field.split(':', 2)`` (``':', 3`` for ``crossed``) recovers it.
- The tracks message carries the detections of confirmed tracks with their track id; ``untracked`` counts the
  other detections given to the tracker (detections of labels the sink does not track are in neither).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.wire import BestShot, Box, Detection, Event, EventType, Result, Tracks
from sink.tracker import TrackerSinkConfig
from sink.tracker.zones import Areas, Direction, Point

if TYPE_CHECKING:
    from sink.tracker.bytetrack import FrameTracks

STATE_FORMAT = 1
Best = tuple[str, int, float, float, Box]  # a BestShot's fields, made into one only for an event
_BEST = ("frame_id", "seq", "capture_ts", "score", "box")


@dataclass
class Outcome:
    """What one result of a camera gave."""

    tracks: Tracks
    events: list[Event]  # in the order they happened
    counts: dict[str, int]  # increments of the running totals (only non-zero ones)
    occupancy: dict[str, int]  # the current value of every occupancy field


class _Track:
    """What is known of one track (tentative or started)."""

    __slots__ = (
        "best",
        "class_id",
        "first_ts",
        "height",
        "label",
        "last_box",
        "last_frame",
        "last_score",
        "last_seq",
        "last_ts",
        "loitered",
        "n",
        "point",
        "sides",
        "started",
        "width",
        "zones",
    )

    def __init__(
        self,
        *,
        label: str,
        class_id: int,
        started: bool,
        n: int,
        first_ts: float,
        last_ts: float,
        last_seq: int,
        last_frame: str,
        last_score: float,
        last_box: Box,
        width: int,
        height: int,
        best: Best,
        point: Point,
        zones: dict[str, float],
        loitered: set[str],
        sides: list[int],
    ) -> None:
        self.label, self.class_id, self.started, self.n = label, class_id, started, n
        self.first_ts, self.last_ts, self.last_seq, self.last_frame = first_ts, last_ts, last_seq, last_frame
        self.last_score, self.last_box, self.width, self.height = last_score, last_box, width, height
        self.best, self.point, self.zones, self.loitered, self.sides = best, point, zones, loitered, sides


class _TrackState(BaseModel):
    """One track in the checkpointed state (validated on restore only: restoring is rare, frames are not)."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1)
    label: str
    class_id: int = Field(ge=0)
    started: bool
    n: int = Field(ge=0)
    first_ts: float = Field(gt=0)
    last_ts: float = Field(gt=0)
    last_seq: int = Field(ge=0)
    last_frame: str = Field(min_length=3)
    last_score: float = Field(ge=0, le=1)
    last_box: Box
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    best: BestShot
    point: tuple[float, float]
    zones: list[tuple[str, float, bool]]  # name, entered at, loitered this visit
    sides: dict[str, Literal[-1, 1]]  # line name -> side last left on (lines never left off: absent)


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1]
    stream: str
    tracks: list[_TrackState]
    reported: list[str]  # the occupancy fields reported so far, in order


class EventMaker:
    """Everything after association, for one camera of one tracker sink."""

    def __init__(self, tracker: str, stream: str, cfg: TrackerSinkConfig) -> None:
        self.tracker, self.stream = tracker, stream
        self.areas = Areas(cfg.areas(stream), cfg.anchor)
        self.max_age_s = cfg.max_age_s
        self._tracks: dict[int, _Track] = {}
        self._tentative: set[int] = set()
        self._occupancy: dict[str, int] = {}
        self._loiter_zones: dict[str, tuple[tuple[str, float], ...]] = {}  # label -> (zone, loiter_s)

    # --- per frame

    def frame(self, result: Result, detections: list[Detection], tracks: FrameTracks, skipped: int) -> Outcome:
        """One result: ``detections`` are those given to the tracker (``Match.index`` points into them),
        ``skipped`` the frames before it that never came (passed on in the tracks message)."""
        if result.stream != self.stream:
            raise ValueError(f"result of stream {result.stream!r} given to the events of {self.stream!r}")
        events: list[Event] = []
        counts: dict[str, int] = {}
        for track_id in tracks.ended:
            self._end(track_id, events, counts)
        ts, width, height = result.capture_ts, result.width, result.height
        areas = self.areas
        # The tracked objects go into the message as plain dicts, validated in the one call that makes it: measured
        # (pydantic 2.14), pydantic-core validating them is faster than model_construct's Python loop, 1 us an
        # object against 2-4, and a message that consumers could not decode can never be published.
        objects: list[dict[str, Any]] = []
        for match in tracks.matches:
            det = detections[match.index]
            track_id = match.track_id
            point = areas.anchor(det.box, width, height)
            rec = self._tracks.get(track_id)
            if rec is None:
                rec = self._new(track_id, det, result, point)
                crossed: list[tuple[str, Direction]] = []
                left: Sequence[str] = ()
                entered: Sequence[str] = ()
            else:
                crossed = areas.crossings(rec.point, point, rec.label, rec.sides)
                rec.point = point
                rec.last_ts, rec.last_seq, rec.last_frame = ts, result.seq, result.frame_id
                rec.last_score, rec.last_box, rec.width, rec.height = det.score, det.box, width, height
                if det.score > rec.best[3]:
                    rec.best = (result.frame_id, result.seq, ts, det.score, det.box)
                zones = areas.zones_of(point, rec.label)
                left, entered = self._move(rec, zones, ts) if zones or rec.zones else ((), ())
            if not rec.started:
                if not (match.started or match.confirmed):
                    continue  # tentative: followed, never told
                self._start(track_id, rec, events, counts)
            else:
                for zone in left:
                    self._zone_change(track_id, rec, "zone_leave", zone, events, counts, -1)
                for zone in entered:
                    self._zone_change(track_id, rec, "zone_enter", zone, events, counts, 1)
            for line, direction in crossed:
                events.append(self._event(track_id, rec, "update", "line_cross", line=line, direction=direction))
                key = f"crossed:{line}:{direction}:{rec.label}"
                counts[key] = counts.get(key, 0) + 1
            if rec.zones:
                self._loiter(track_id, rec, ts, events)
            objects.append(
                {"track_id": track_id, "label": det.label, "class_id": det.class_id, "score": det.score, "box": det.box}
            )
        if self._tentative:
            self._forget_tentative(ts)
        message = Tracks.model_validate(
            {
                "tracker": self.tracker,
                "frame_id": result.frame_id,
                "stream": result.stream,
                "seq": result.seq,
                "capture_ts": ts,
                "width": width,
                "height": height,
                "objects": objects,
                "untracked": len(detections) - len(objects),
                "skipped": skipped,
            }
        )
        return Outcome(tracks=message, events=events, counts=counts, occupancy=dict(self._occupancy))

    def _new(self, track_id: int, det: Detection, result: Result, point: Point) -> _Track:
        areas, ts = self.areas, result.capture_ts
        rec = _Track(
            label=det.label,
            class_id=det.class_id,
            started=False,
            n=0,
            first_ts=ts,
            last_ts=ts,
            last_seq=result.seq,
            last_frame=result.frame_id,
            last_score=det.score,
            last_box=det.box,
            width=result.width,
            height=result.height,
            best=(result.frame_id, result.seq, ts, det.score, det.box),
            point=point,
            zones=dict.fromkeys(areas.zones_of(point, det.label), ts),
            loitered=set(),
            sides=areas.sides(point, det.label),
        )
        self._tracks[track_id] = rec
        self._tentative.add(track_id)
        return rec

    @staticmethod
    def _move(rec: _Track, now: list[str], ts: float) -> tuple[Sequence[str], Sequence[str]]:
        """Set the zones a track is in now; returns those it left and those it entered (configuration order)."""
        old = rec.zones
        if len(now) == len(old) and all(zone in old for zone in now):
            return (), ()  # the usual case: nothing changed
        left = [zone for zone in old if zone not in now]
        entered = [zone for zone in now if zone not in old]
        rec.zones = {zone: old.get(zone, ts) for zone in now}
        if rec.loitered:
            rec.loitered &= rec.zones.keys()  # a visit that ended may loiter again next time
        return left, entered

    def _start(self, track_id: int, rec: _Track, events: list[Event], counts: dict[str, int]) -> None:
        rec.started = True
        self._tentative.discard(track_id)
        events.append(self._event(track_id, rec, "start"))
        label, occupancy = rec.label, self._occupancy
        key = f"tracks:{label}"
        counts[key] = counts.get(key, 0) + 1
        key = f"now:*:{label}"
        occupancy[key] = occupancy.get(key, 0) + 1
        for zone in rec.zones:
            key = f"entered:{zone}:{label}"
            counts[key] = counts.get(key, 0) + 1
            key = f"now:{zone}:{label}"
            occupancy[key] = occupancy.get(key, 0) + 1

    def _zone_change(
        self,
        track_id: int,
        rec: _Track,
        change: Literal["zone_enter", "zone_leave"],
        zone: str,
        events: list[Event],
        counts: dict[str, int],
        step: int,
    ) -> None:
        events.append(self._event(track_id, rec, "update", change, zone=zone))
        key = f"{'entered' if step > 0 else 'left'}:{zone}:{rec.label}"
        counts[key] = counts.get(key, 0) + 1
        key = f"now:{zone}:{rec.label}"
        self._occupancy[key] = self._occupancy.get(key, 0) + step

    def _loiter(self, track_id: int, rec: _Track, ts: float, events: list[Event]) -> None:
        zones = self._loiter_zones.get(rec.label)
        if zones is None:
            zones = self._loiter_zones[rec.label] = tuple(
                (z.name, z.loiter_s) for z in self.areas.zones_for(rec.label) if z.loiter_s is not None
            )
        for zone, loiter_s in zones:
            since = rec.zones.get(zone)
            if since is not None and zone not in rec.loitered and ts - since >= loiter_s:
                rec.loitered.add(zone)
                events.append(self._event(track_id, rec, "update", "loiter", zone=zone))

    def _end(self, track_id: int, events: list[Event], counts: dict[str, int]) -> None:
        rec = self._tracks.pop(track_id, None)
        self._tentative.discard(track_id)
        if rec is None or not rec.started:
            return  # the tracker only ends confirmed tracks; one never started has nothing to close
        events.append(self._event(track_id, rec, "end"))
        label, occupancy = rec.label, self._occupancy
        occupancy[f"now:*:{label}"] -= 1
        for zone in rec.zones:
            key = f"left:{zone}:{label}"
            counts[key] = counts.get(key, 0) + 1
            occupancy[f"now:{zone}:{label}"] -= 1

    def _forget_tentative(self, ts: float) -> None:
        # The tracker drops a tentative track without a word; it surely has once it was not seen for max_age_s.
        gone = [t for t in self._tentative if ts - self._tracks[t].last_ts > self.max_age_s]
        for track_id in gone:
            self._tentative.discard(track_id)
            del self._tracks[track_id]

    def _event(
        self,
        track_id: int,
        rec: _Track,
        event: EventType,
        change: Literal["zone_enter", "zone_leave", "line_cross", "loiter"] | None = None,
        *,
        zone: str | None = None,
        line: str | None = None,
        direction: Direction | None = None,
    ) -> Event:
        """An event decided by the track's last sighting (start and update: the current frame)."""
        n = rec.n
        rec.n += 1
        frame_id, seq, capture_ts, score, box = rec.best
        # Validated, as the tracks message (see frame()): as fast as model_construct, and never an undecodable event.
        return Event.model_validate(
            {
                "event_id": f"{self.tracker}:{self.stream}:{track_id}:{n}",
                "tracker": self.tracker,
                "stream": self.stream,
                "event": event,
                "change": change,
                "zone": zone,
                "line": line,
                "direction": direction,
                "track_id": track_id,
                "label": rec.label,
                "class_id": rec.class_id,
                "frame_id": rec.last_frame,
                "seq": rec.last_seq,
                "capture_ts": rec.last_ts,
                "score": rec.last_score,
                "box": rec.last_box,
                "first_seen_ts": rec.first_ts,
                "last_seen_ts": rec.last_ts,
                "duration_s": max(0.0, rec.last_ts - rec.first_ts),  # a capture clock stepping back must not break it
                "zones": list(rec.zones),
                "best": {"frame_id": frame_id, "seq": seq, "capture_ts": capture_ts, "score": score, "box": box},
                "width": rec.width,
                "height": rec.height,
            }
        )

    # --- checkpoints

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this left off, as plain data (msgpack-able)."""
        lines = self.areas.lines
        return {
            "format": STATE_FORMAT,
            "stream": self.stream,
            "tracks": [
                {
                    "id": track_id,
                    "label": rec.label,
                    "class_id": rec.class_id,
                    "started": rec.started,
                    "n": rec.n,
                    "first_ts": rec.first_ts,
                    "last_ts": rec.last_ts,
                    "last_seq": rec.last_seq,
                    "last_frame": rec.last_frame,
                    "last_score": rec.last_score,
                    "last_box": list(rec.last_box),
                    "width": rec.width,
                    "height": rec.height,
                    "best": dict(zip(_BEST, (*rec.best[:4], list(rec.best[4])), strict=True)),
                    "point": list(rec.point),
                    "zones": [[zone, since, zone in rec.loitered] for zone, since in rec.zones.items()],
                    "sides": {line.name: rec.sides[line.index] for line in lines if rec.sides[line.index]},
                }
                for track_id, rec in self._tracks.items()
            ],
            "reported": list(self._occupancy),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s output (ValueError when it is not one). Zones and lines no longer
        configured are forgotten; occupancy is worked out again from the tracks."""
        try:
            parsed = _State.model_validate(state)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
            )
            raise ValueError(f"malformed tracker events state of {self.stream!r}: {problems}") from None
        if parsed.stream != self.stream:
            raise ValueError(f"tracker events state of stream {parsed.stream!r} given to {self.stream!r}")
        ids = [t.id for t in parsed.tracks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"malformed tracker events state of {self.stream!r}: a track id appears twice")
        zone_names = {z.name for z in self.areas.zones}
        line_index = {line.name: line.index for line in self.areas.lines}
        tracks: dict[int, _Track] = {}
        for t in parsed.tracks:
            sides = [0] * len(line_index)
            for name, side in t.sides.items():
                if name in line_index:
                    sides[line_index[name]] = side
            tracks[t.id] = _Track(
                label=t.label,
                class_id=t.class_id,
                started=t.started,
                n=t.n,
                first_ts=t.first_ts,
                last_ts=t.last_ts,
                last_seq=t.last_seq,
                last_frame=t.last_frame,
                last_score=t.last_score,
                last_box=t.last_box,
                width=t.width,
                height=t.height,
                best=(t.best.frame_id, t.best.seq, t.best.capture_ts, t.best.score, t.best.box),
                point=t.point,
                zones={zone: since for zone, since, _ in t.zones if zone in zone_names},
                loitered={zone for zone, _, loitered in t.zones if loitered and zone in zone_names},
                sides=sides,
            )
        occupancy = dict.fromkeys(parsed.reported, 0)
        for rec in tracks.values():
            if rec.started:
                for key in (f"now:*:{rec.label}", *(f"now:{zone}:{rec.label}" for zone in rec.zones)):
                    occupancy[key] = occupancy.get(key, 0) + 1
        self._tracks = tracks
        self._tentative = {track_id for track_id, rec in tracks.items() if not rec.started}
        self._occupancy = occupancy
