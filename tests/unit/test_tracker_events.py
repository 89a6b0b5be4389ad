"""Zones, lines and the tracker's events: what an object does against a camera's areas, and what is told of it.

The tracker's output (``FrameTracks``) is built by hand here (:class:`Script`), so these tests hold whatever the
association does.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pytest

from common.wire import Detection, Event, Result, Timings, Tracks, decode, encode
from sink.tracker import CameraAreas, TrackerSinkConfig
from sink.tracker.bytetrack import FrameTracks, Match
from sink.tracker.events import EventMaker, Outcome
from sink.tracker.zones import LEFT, RIGHT, Areas

T0 = 1_700_000_000.0
W, H = 200, 100
# Coordinates below are binary fractions (0.125, 0.375 ...): exact in floating point, so "exactly on the line"
# and "exactly through an end" mean what they say.
SQUARE = [(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)]
U_SHAPE = [  # a U opening upwards; its notch is x 0.375-0.625, y 0.125-0.625
    (0.125, 0.125),
    (0.375, 0.125),
    (0.375, 0.625),
    (0.625, 0.625),
    (0.625, 0.125),
    (0.875, 0.125),
    (0.875, 0.875),
    (0.125, 0.875),
]
HORIZONTAL = [(0.25, 0.5), (0.75, 0.5)]  # drawn left to right: its left side is above it (smaller y)
VERTICAL = [(0.5, 0.25), (0.5, 0.75)]  # drawn top to bottom: its left side is right of it (larger x)


def areas(zones: list[dict[str, Any]] | None = None, lines: list[dict[str, Any]] | None = None) -> CameraAreas:
    return CameraAreas.model_validate({"zones": zones or [], "lines": lines or []})


def config(
    zones: list[dict[str, Any]] | None = None, lines: list[dict[str, Any]] | None = None, **settings: Any
) -> TrackerSinkConfig:
    return TrackerSinkConfig.model_validate(
        {"name": "trk", "cameras": {"cam1": {"zones": zones or [], "lines": lines or []}}, **settings}
    )


def det(x: float, y: float, label: str = "person", score: float = 0.9) -> Detection:
    """A 20x20 box whose bottom centre is at the relative point (x, y)."""
    px, py = x * W, y * H
    return Detection(
        label=label, class_id=0 if label == "person" else 2, score=score, box=(px - 10, py - 20, px + 10, py)
    )


def result(seq: int, dets: list[Detection], ts: float | None = None, stream: str = "cam1") -> Result:
    capture = T0 + seq if ts is None else ts
    return Result(
        frame_id=f"{1000 + seq}-0",
        stream=stream,
        seq=seq,
        capture_ts=capture,
        width=W,
        height=H,
        pool="main",
        replica="r0",
        engine="torch",
        device="cpu",
        batch_size=1,
        published_ts=capture + 0.1,
        timings=Timings(queue_ms=1, decode_ms=1, inference_ms=1, postprocess_ms=1, end_to_end_ms=5),
        detections=dets,
    )


@dataclass(frozen=True)
class Obj:
    """One detection of a track in a frame of a script."""

    track_id: int
    x: float
    y: float
    label: str = "person"
    score: float = 0.9


Step = tuple[Result, list[Detection], FrameTracks]


class Script:
    """Plays the tracker: a track is confirmed at its min_hits-th sighting; ``ended`` names what the tracker ended
    (only confirmed tracks are ever reported, as the interface says)."""

    def __init__(self, min_hits: int) -> None:
        self.min_hits = min_hits
        self.hits: Counter[int] = Counter()

    def step(
        self, seq: int, objects: list[Obj], ended: tuple[int, ...] = (), unmatched: int = 0, ts: float | None = None
    ) -> Step:
        dets = [det(o.x, o.y, o.label, o.score) for o in objects]
        dets += [det(0.0625, 0.0625, score=0.2)] * unmatched  # weak detections no track took
        matches = []
        for index, o in enumerate(objects):
            self.hits[o.track_id] += 1
            hits = self.hits[o.track_id]
            matches.append(Match(index, o.track_id, hits >= self.min_hits, hits == self.min_hits))
        assert all(self.hits[t] >= self.min_hits for t in ended), "the tracker only ends confirmed tracks"
        return result(seq, dets, ts), dets, FrameTracks(matches, list(ended))


def play(maker: EventMaker, steps: list[Step], skipped: int = 0) -> list[Outcome]:
    return [maker.frame(res, dets, tracks, skipped) for res, dets, tracks in steps]


def brief(event: Event) -> tuple[Any, ...]:
    """What happened, without the frame data: (track, event, change, zone or line, direction)."""
    return (event.track_id, event.event, event.change, event.zone or event.line, event.direction)


def through_msgpack(state: dict[str, Any]) -> dict[str, Any]:
    restored: dict[str, Any] = msgpack.unpackb(msgpack.packb(state, use_bin_type=True), raw=False)
    return restored


# --- zones


def test_anchor_is_the_bottom_centre_or_the_centre_relative_to_the_frame() -> None:
    box = (40.0, 20.0, 60.0, 80.0)
    assert Areas(areas(), "bottom_center").anchor(box, W, H) == (0.25, 0.8)
    assert Areas(areas(), "center").anchor(box, W, H) == (0.25, 0.5)


def test_a_convex_zone_holds_the_points_inside_it() -> None:
    a = Areas(areas([{"name": "sq", "polygon": SQUARE}]), "bottom_center")
    assert a.zones_of((0.5, 0.5), "person") == ["sq"]
    assert a.zones_of((0.625, 0.375), "person") == ["sq"]
    assert a.zones_of((0.125, 0.5), "person") == []
    assert a.zones_of((0.5, 0.875), "person") == []


def test_a_concave_zone_leaves_out_its_notch() -> None:
    a = Areas(areas([{"name": "u", "polygon": U_SHAPE}]), "bottom_center")
    assert a.zones_of((0.5, 0.375), "person") == []  # inside the bounding box, in the notch
    assert a.zones_of((0.25, 0.375), "person") == ["u"]  # left arm
    assert a.zones_of((0.75, 0.375), "person") == ["u"]  # right arm
    assert a.zones_of((0.5, 0.75), "person") == ["u"]  # the base joining them
    assert a.zones_of((0.9375, 0.5), "person") == []


def test_a_zone_with_labels_takes_only_those_and_zones_come_in_configuration_order() -> None:
    a = Areas(
        areas([{"name": "cars", "polygon": SQUARE, "labels": ["car"]}, {"name": "all", "polygon": U_SHAPE}]),
        "bottom_center",
    )
    assert a.zones_of((0.5, 0.6875), "car") == ["cars", "all"]
    assert a.zones_of((0.5, 0.6875), "person") == ["all"]


# --- lines


def crossing(line: list[tuple[float, float]], *path: tuple[float, float], label: str = "person") -> list[list[Any]]:
    """The crossings of each move along ``path`` over one line, with the sides memory."""
    a = Areas(areas(lines=[{"name": "l", "points": line}]), "bottom_center")
    sides = a.sides(path[0], label)
    return [a.crossings(p, q, label, sides) for p, q in itertools.pairwise(path)]


def test_left_of_a_horizontal_line_drawn_left_to_right_is_above_it() -> None:
    a = Areas(areas(lines=[{"name": "l", "points": HORIZONTAL}]), "bottom_center")
    assert a.sides((0.5, 0.375), "person") == [LEFT]
    assert a.sides((0.5, 0.625), "person") == [RIGHT]
    assert crossing(HORIZONTAL, (0.5, 0.625), (0.5, 0.375)) == [[("l", "in")]]  # going up
    assert crossing(HORIZONTAL, (0.5, 0.375), (0.5, 0.625)) == [[("l", "out")]]  # going down
    assert crossing(HORIZONTAL[::-1], (0.5, 0.625), (0.5, 0.375)) == [[("l", "out")]]  # points swapped


def test_left_of_a_vertical_line_drawn_top_to_bottom_is_right_of_it() -> None:
    a = Areas(areas(lines=[{"name": "l", "points": VERTICAL}]), "bottom_center")
    assert a.sides((0.625, 0.5), "person") == [LEFT]
    assert crossing(VERTICAL, (0.375, 0.5), (0.625, 0.5)) == [[("l", "in")]]  # going right
    assert crossing(VERTICAL, (0.625, 0.5), (0.375, 0.5)) == [[("l", "out")]]  # going left
    assert crossing(VERTICAL[::-1], (0.375, 0.5), (0.625, 0.5)) == [[("l", "out")]]


def test_only_the_segment_counts_not_its_extension() -> None:
    assert crossing(HORIZONTAL, (0.875, 0.625), (0.875, 0.375)) == [[]]
    assert crossing(HORIZONTAL, (0.125, 0.875), (0.875, 0.125)) == [[("l", "in")]]  # a diagonal through it


def test_grazing_an_end_of_the_line_is_no_crossing() -> None:
    # Straight through A = (0.25, 0.5), from below to above.
    assert crossing(HORIZONTAL, (0.125, 0.625), (0.375, 0.375)) == [[]]
    # Stopping exactly on A, then going on to the other side.
    assert crossing(HORIZONTAL, (0.25, 0.625), (0.25, 0.5), (0.25, 0.375)) == [[], []]
    # A hair inside the segment is a crossing.
    assert crossing(HORIZONTAL, (0.2578125, 0.625), (0.2578125, 0.375)) == [[("l", "in")]]


def test_stopping_on_the_line_is_one_crossing_when_it_goes_on_and_none_when_it_goes_back() -> None:
    below, on, above = (0.5, 0.625), (0.5, 0.5), (0.5, 0.375)
    assert crossing(HORIZONTAL, below, on, on, on, above) == [[], [], [], [("l", "in")]]
    assert crossing(HORIZONTAL, below, on, on, below) == [[], [], []]
    assert crossing(HORIZONTAL, above, on, (0.625, 0.5), below) == [[], [], [("l", "out")]]  # slid along it
    assert crossing(HORIZONTAL, below, on, above, on, above) == [[], [("l", "in")], [], []]  # no double count
    # Left from where the line has no segment: around it, not through it.
    assert crossing(HORIZONTAL, below, (0.875, 0.5), above) == [[], []]
    # First seen on the line: it came from no side.
    assert crossing(HORIZONTAL, on, above, below) == [[], [("l", "out")]]


def test_without_the_sides_memory_a_move_from_or_onto_the_line_never_crosses() -> None:
    a = Areas(areas(lines=[{"name": "l", "points": HORIZONTAL}]), "bottom_center")
    assert a.crossings((0.5, 0.625), (0.5, 0.5), "person") == []
    assert a.crossings((0.5, 0.5), (0.5, 0.375), "person") == []
    assert a.crossings((0.5, 0.625), (0.5, 0.375), "person") == [("l", "in")]


def test_a_line_with_labels_counts_only_those() -> None:
    a = Areas(
        areas(lines=[{"name": "cars", "points": HORIZONTAL, "labels": ["car"]}, {"name": "all", "points": VERTICAL}]),
        "bottom_center",
    )
    move = ((0.375, 0.625), (0.625, 0.375))  # through both lines
    assert a.crossings(*move, "car", a.sides(move[0], "car")) == [("cars", "in"), ("all", "in")]
    assert a.crossings(*move, "person", a.sides(move[0], "person")) == [("all", "in")]


# --- events, counts, occupancy


def test_a_track_starts_changes_and_ends_with_counts_and_occupancy() -> None:
    west = {"name": "west", "polygon": [(0, 0), (0.5, 0), (0.5, 1), (0, 1)]}
    cfg = config([west], [{"name": "gate", "points": VERTICAL[::-1]}], min_hits=2)
    # gate is drawn bottom to top: its left side is left of it, so going left is "in".
    s = Script(min_hits=2)
    steps = [
        s.step(0, [Obj(1, 0.25, 0.5), Obj(2, 0.875, 0.5)]),  # both tentative
        s.step(1, [Obj(1, 0.375, 0.5)]),  # 1 starts, in west
        s.step(2, [Obj(1, 0.5625, 0.9375)]),  # leaves west, passing below the gate
        s.step(3, [Obj(1, 0.5625, 0.625)]),
        s.step(4, [Obj(1, 0.4375, 0.625)]),  # through the gate (and into west)
        s.step(5, [], ended=(1,)),
    ]
    out = play(EventMaker("trk", "cam1", cfg), steps)
    assert [[brief(e) for e in o.events] for o in out] == [
        [],
        [(1, "start", None, None, None)],
        [(1, "update", "zone_leave", "west", None)],
        [],
        [(1, "update", "zone_enter", "west", None), (1, "update", "line_cross", "gate", "in")],
        [(1, "end", None, None, None)],
    ]
    assert [o.counts for o in out] == [
        {},
        {"tracks:person": 1, "entered:west:person": 1},
        {"left:west:person": 1},
        {},
        {"entered:west:person": 1, "crossed:gate:in:person": 1},
        {"left:west:person": 1},
    ]
    assert [o.occupancy for o in out] == [
        {},
        {"now:*:person": 1, "now:west:person": 1},
        {"now:*:person": 1, "now:west:person": 0},
        {"now:*:person": 1, "now:west:person": 0},
        {"now:*:person": 1, "now:west:person": 1},
        {"now:*:person": 0, "now:west:person": 0},  # reported at 0, so a reader sees them drop
    ]
    events = [e for o in out for e in o.events]
    assert [e.event_id for e in events] == [f"trk:cam1:1:{n}" for n in range(5)]
    assert [e.zones for e in events] == [["west"], [], ["west"], ["west"], ["west"]]


def test_event_fields_come_from_the_deciding_frame_and_the_end_from_the_last_sighting() -> None:
    cfg = config(min_hits=2)
    s = Script(min_hits=2)
    steps = [
        s.step(0, [Obj(1, 0.25, 0.5, score=0.7)]),
        s.step(1, [Obj(1, 0.375, 0.5, score=0.95)]),
        s.step(2, [Obj(1, 0.4375, 0.5, score=0.95)]),  # as good: the best shot stays the earlier frame
        s.step(3, [Obj(1, 0.5, 0.5, score=0.8)]),
        s.step(6, [], ended=(1,)),
    ]
    start, end = (e for o in play(EventMaker("trk", "cam1", cfg), steps) for e in o.events)
    assert (start.frame_id, start.seq, start.capture_ts, start.score) == ("1001-0", 1, T0 + 1, 0.95)
    assert start.box == det(0.375, 0.5).box
    assert (start.first_seen_ts, start.last_seen_ts, start.duration_s) == (T0, T0 + 1, 1.0)
    assert (end.frame_id, end.seq, end.capture_ts, end.score) == ("1003-0", 3, T0 + 3, 0.8)  # not frame 6
    assert end.box == det(0.5, 0.5).box
    assert (end.last_seen_ts, end.duration_s) == (T0 + 3, 3.0)
    assert (end.best.frame_id, end.best.score, end.best.box) == ("1001-0", 0.95, det(0.375, 0.5).box)
    assert (end.width, end.height, end.label, end.class_id) == (W, H, "person", 0)
    assert (end.tracker, end.stream, end.event_id) == ("trk", "cam1", "trk:cam1:1:1")
    for event in (start, end):
        assert decode(encode(event), Event) == event  # model_construct built a valid message


def test_an_object_that_appears_in_a_zone_has_entered_it_and_one_that_ends_there_has_left() -> None:
    cfg = config([{"name": "sq", "polygon": SQUARE}], min_hits=1)
    s = Script(min_hits=1)
    out = play(EventMaker("trk", "cam1", cfg), [s.step(0, [Obj(7, 0.5, 0.5)]), s.step(1, [], ended=(7,))])
    assert out[0].counts == {"tracks:person": 1, "entered:sq:person": 1}
    assert [(e.event, e.zones) for e in out[0].events] == [("start", ["sq"])]
    assert out[1].counts == {"left:sq:person": 1}
    assert [(e.event, e.zones) for e in out[1].events] == [("end", ["sq"])]
    assert out[1].occupancy == {"now:*:person": 0, "now:sq:person": 0}


def test_tentative_tracks_are_followed_but_never_told_and_a_move_into_the_start_frame_counts() -> None:
    cfg = config(lines=[{"name": "h", "points": HORIZONTAL}], min_hits=3)
    s = Script(min_hits=3)
    steps = [
        s.step(0, [Obj(1, 0.5, 0.625)]),
        s.step(1, [Obj(1, 0.5, 0.375)]),  # crosses while tentative: not counted
        s.step(2, [Obj(1, 0.5, 0.625)]),  # crosses into its start frame: counted
        s.step(3, [Obj(1, 0.5, 0.375)]),
    ]
    out = play(EventMaker("trk", "cam1", cfg), steps)
    assert [[brief(e) for e in o.events] for o in out] == [
        [],
        [],
        [(1, "start", None, None, None), (1, "update", "line_cross", "h", "out")],
        [(1, "update", "line_cross", "h", "in")],
    ]
    assert out[2].events[1].event_id == "trk:cam1:1:1"


def test_a_stop_on_a_line_counts_once_for_a_track() -> None:
    cfg = config(lines=[{"name": "h", "points": HORIZONTAL}], min_hits=1)
    s = Script(min_hits=1)
    path = [(0.5, 0.625), (0.5, 0.5), (0.5, 0.5), (0.5, 0.375), (0.5, 0.5), (0.5, 0.375), (0.5, 0.5), (0.5, 0.375)]
    out = play(EventMaker("trk", "cam1", cfg), [s.step(i, [Obj(1, x, y)]) for i, (x, y) in enumerate(path)])
    assert sum((Counter(o.counts) for o in out), Counter()) == {"tracks:person": 1, "crossed:h:in:person": 1}


def test_loitering_fires_once_per_visit_and_again_after_coming_back() -> None:
    cfg = config([{"name": "bench", "polygon": SQUARE, "loiter_s": 3}], min_hits=2)
    s = Script(min_hits=2)
    inside, outside = (0.5, 0.5), (0.125, 0.5)
    path = [inside] * 6 + [outside] + [inside] * 5  # in from 0 (tentative), out at 6, back at 7
    out = play(EventMaker("trk", "cam1", cfg), [s.step(i, [Obj(1, *p)]) for i, p in enumerate(path)])
    told = [(i, brief(e)[1:4]) for i, o in enumerate(out) for e in o.events]
    assert told == [
        (1, ("start", None, None)),
        (3, ("update", "loiter", "bench")),  # 3 s after entering at 0, tentative then
        (6, ("update", "zone_leave", "bench")),
        (7, ("update", "zone_enter", "bench")),
        (10, ("update", "loiter", "bench")),
    ]


def test_loitering_needs_an_uninterrupted_visit() -> None:
    cfg = config([{"name": "bench", "polygon": SQUARE, "loiter_s": 3}], min_hits=1)
    s = Script(min_hits=1)
    path = [(0.5, 0.5), (0.5, 0.5), (0.125, 0.5), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5)]
    out = play(EventMaker("trk", "cam1", cfg), [s.step(i, [Obj(1, *p)]) for i, p in enumerate(path)])
    # At 4 and 5: 4 and 5 s after the first entry, but 1 and 2 s into this visit.
    assert [e.seq for o in out for e in o.events if e.change == "loiter"] == []
    s2 = Script(min_hits=1)
    more = play(EventMaker("trk", "cam1", cfg), [s2.step(i, [Obj(1, *p)]) for i, p in enumerate([*path, path[-1]])])
    assert [(e.change, e.seq) for o in more for e in o.events if e.change == "loiter"] == [("loiter", 6)]


def test_the_tracks_message_carries_only_confirmed_tracks() -> None:
    cfg = config(min_hits=2)
    s = Script(min_hits=2)
    steps = [
        s.step(0, [Obj(1, 0.25, 0.5), Obj(2, 0.5, 0.5, label="car")], unmatched=1),
        s.step(1, [Obj(3, 0.75, 0.5), Obj(1, 0.25, 0.5)], unmatched=2),  # 1 confirmed, 3 tentative
    ]
    out = play(EventMaker("trk", "cam1", cfg), steps, skipped=4)
    first, second = (o.tracks for o in out)
    assert (first.objects, first.untracked, first.skipped) == ([], 3, 4)
    assert [(o.track_id, o.label, o.box) for o in second.objects] == [(1, "person", det(0.25, 0.5).box)]
    assert second.untracked == 3  # the tentative track 3 and two unmatched detections
    assert (second.tracker, second.frame_id, second.stream, second.seq, second.capture_ts) == (
        "trk",
        "1001-0",
        "cam1",
        1,
        T0 + 1,
    )
    assert (second.width, second.height) == (W, H)
    assert decode(encode(second), Tracks) == second


def test_ends_come_first_and_a_track_never_started_ends_silently() -> None:
    maker = EventMaker("trk", "cam1", config(min_hits=2))
    s = Script(min_hits=2)
    maker.frame(*s.step(0, [Obj(1, 0.25, 0.5)]), 0)
    maker.frame(*s.step(1, [Obj(1, 0.25, 0.5), Obj(2, 0.5, 0.5), Obj(3, 0.75, 0.5)]), 0)
    out = maker.frame(*s.step(2, [Obj(2, 0.5, 0.5)], ended=(1,)), 0)
    assert [brief(e) for e in out.events] == [(1, "end", None, None, None), (2, "start", None, None, None)]
    # What the interface rules out, guarded: ending a tentative track (3) or one never seen (99).
    out = maker.frame(result(3, []), [], FrameTracks([], [3, 99]), 0)
    assert out.events == []
    assert out.occupancy == {"now:*:person": 1}
    assert [t["id"] for t in maker.state()["tracks"]] == [2]


def test_a_tentative_track_is_forgotten_once_not_seen_for_max_age() -> None:
    cfg = config(min_hits=3, max_age_s=2)
    maker = EventMaker("trk", "cam1", cfg)
    s = Script(min_hits=3)
    maker.frame(*s.step(0, [Obj(1, 0.25, 0.5)]), 0)
    for seq in (1, 2):
        maker.frame(*s.step(seq, []), 0)
        assert [t["id"] for t in maker.state()["tracks"]] == [1]  # 2 s is not more than max_age_s
    maker.frame(*s.step(3, []), 0)
    assert maker.state()["tracks"] == []


def test_a_result_of_another_camera_is_refused() -> None:
    maker = EventMaker("trk", "cam1", config())
    with pytest.raises(ValueError, match="cam2"):
        maker.frame(result(0, [], stream="cam2"), [], FrameTracks([], []), 0)


# --- a long random sequence: invariants, determinism, checkpoints


LABELS = ("person", "car")


def random_script() -> tuple[TrackerSinkConfig, list[Step], list[dict[int, tuple[str, float, float]]]]:
    """Objects walking about over two zones (one concave, one person-only with loitering) and two lines; tracks
    born and ended along the way. Also returns, per frame, the confirmed live tracks with their last anchors."""
    cfg = config(
        [{"name": "sq", "polygon": SQUARE, "loiter_s": 2}, {"name": "u", "polygon": U_SHAPE, "labels": ["person"]}],
        [
            {"name": "h", "points": [(0, 0.5), (1, 0.5)]},
            {"name": "v", "points": [(0.5, 0), (0.5, 1)], "labels": ["car"]},
        ],
        min_hits=2,
    )
    rng = np.random.default_rng(7)
    s = Script(min_hits=2)
    spans = {t: (int(rng.integers(0, 30)), int(rng.integers(1, 16))) for t in range(1, 17)}  # first frame, length
    where = {t: rng.random(2) for t in spans}
    live: dict[int, tuple[str, float, float]] = {}
    steps, truth = [], []
    for seq in range(45):
        objects = []
        for t, (first, length) in spans.items():
            if first <= seq < first + length:
                where[t] = np.clip(where[t] + rng.uniform(-0.2, 0.2, 2), 0, 1)  # a walk: some stay, some cross
                x, y = (float(v) for v in where[t])
                objects.append(Obj(t, x, y, LABELS[t % 2], float(rng.uniform(0.3, 1))))
        ended = tuple(t for t, (first, length) in spans.items() if seq == first + length + 2 and s.hits[t] >= 2)
        steps.append(s.step(seq, objects, ended, unmatched=int(rng.integers(0, 3))))
        for t in ended:
            live.pop(t)
        for o in objects:
            if s.hits[o.track_id] >= 2:
                live[o.track_id] = (o.label, o.x, o.y)
        truth.append(dict(live))
    return cfg, steps, truth


def test_counts_and_occupancy_agree_over_a_long_sequence() -> None:
    cfg, steps, truth = random_script()
    maker = EventMaker("trk", "cam1", cfg)
    a = Areas(cfg.areas("cam1"), cfg.anchor)
    totals: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    for outcome, live in zip(play(maker, steps), truth, strict=True):
        totals.update(outcome.counts)
        kinds.update(f"{e.event}:{e.change}" for e in outcome.events)
        ends.update(e.label for e in outcome.events if e.event == "end")
        expected: Counter[str] = Counter()
        for label, x, y in live.values():
            point = a.anchor(det(x, y).box, W, H)
            expected[f"now:*:{label}"] += 1
            expected.update(f"now:{zone}:{label}" for zone in a.zones_of(point, label))
        assert +Counter(outcome.occupancy) == expected
        for field, value in outcome.occupancy.items():
            _, zone, label = field.split(":", 2)
            if zone == "*":
                assert totals[f"tracks:{label}"] - ends[label] == value
            else:
                assert totals[f"entered:{zone}:{label}"] - totals[f"left:{zone}:{label}"] == value
        for message in (outcome.tracks, *outcome.events):
            assert decode(encode(message), type(message)) == message
    assert sum(v for k, v in totals.items() if k.startswith("tracks:")) == kinds["start:None"]
    # The sequence exercises everything: otherwise the checks above prove little.
    assert {"start:None", "end:None", "update:zone_enter", "update:zone_leave", "update:line_cross"} <= set(kinds)
    assert kinds["update:loiter"] > 0
    assert {k.rsplit(":", 1)[1] for k in totals if k.startswith("crossed:h:")} == {"person", "car"}
    assert {k.rsplit(":", 1)[1] for k in totals if k.startswith("crossed:v:")} == {"car"}  # v only counts cars


def test_the_same_frames_give_the_same_event_ids() -> None:
    cfg, steps, _ = random_script()
    first, second = play(EventMaker("trk", "cam1", cfg), steps), play(EventMaker("trk", "cam1", cfg), steps)
    assert first == second
    ids = [e.event_id for o in first for e in o.events]
    assert len(set(ids)) == len(ids)
    per_track: dict[int, list[int]] = {}
    for event_id in ids:
        tracker, stream, track, n = event_id.split(":")
        assert (tracker, stream) == ("trk", "cam1")
        per_track.setdefault(int(track), []).append(int(n))
    assert all(ns == list(range(len(ns))) for ns in per_track.values())


@pytest.mark.parametrize("split", [0, 1, 3, 8, 14, 22, 30, 37, 44])
def test_a_restored_state_continues_exactly_as_an_uninterrupted_run(split: int) -> None:
    cfg, steps, _ = random_script()
    uninterrupted = play(EventMaker("trk", "cam1", cfg), steps)
    before = EventMaker("trk", "cam1", cfg)
    play(before, steps[:split])
    after = EventMaker("trk", "cam1", cfg)
    after.restore(through_msgpack(before.state()))
    assert after.state() == through_msgpack(before.state())
    rest = play(after, steps[split:])
    assert rest == uninterrupted[split:]
    assert [encode(e) for o in rest for e in o.events] == [encode(e) for o in uninterrupted[split:] for e in o.events]


def test_a_state_mid_visit_and_on_a_line_carries_loitering_and_sides() -> None:
    cfg = config(
        [{"name": "bench", "polygon": SQUARE, "loiter_s": 3}], [{"name": "h", "points": HORIZONTAL}], min_hits=1
    )
    s = Script(min_hits=1)
    path = [(0.5, 0.625), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5), (0.5, 0.375), (0.5, 0.375)]
    steps = [s.step(i, [Obj(1, *p)]) for i, p in enumerate(path)]
    whole = play(EventMaker("trk", "cam1", cfg), steps)
    assert [(e.seq, e.change) for o in whole for e in o.events] == [(0, None), (3, "loiter"), (4, "line_cross")]
    for split in range(1, len(steps)):
        first = EventMaker("trk", "cam1", cfg)
        play(first, steps[:split])
        second = EventMaker("trk", "cam1", cfg)
        second.restore(through_msgpack(first.state()))
        assert play(second, steps[split:]) == whole[split:], split


def test_a_state_restored_under_other_areas_forgets_the_zones_and_lines_gone() -> None:
    before = config(
        [{"name": "sq", "polygon": SQUARE}, {"name": "u", "polygon": U_SHAPE}],
        [{"name": "h", "points": HORIZONTAL}],
        min_hits=1,
    )
    s = Script(min_hits=1)
    first = EventMaker("trk", "cam1", before)
    first.frame(*s.step(0, [Obj(1, 0.5, 0.6875)]), 0)  # in sq and in u's base
    second = EventMaker("trk", "cam1", config([{"name": "u", "polygon": U_SHAPE}], min_hits=1))
    second.restore(through_msgpack(first.state()))
    out = second.frame(*s.step(1, [Obj(1, 0.5, 0.375)]), 0)  # into u's notch, across where h was
    assert [brief(e) for e in out.events] == [(1, "update", "zone_leave", "u", None)]
    assert out.occupancy == {"now:*:person": 1, "now:sq:person": 0, "now:u:person": 0}


def valid_state() -> dict[str, Any]:
    cfg, steps, _ = random_script()
    maker = EventMaker("trk", "cam1", cfg)
    play(maker, steps[:20])
    state = through_msgpack(maker.state())
    assert len(state["tracks"]) >= 2 and state["tracks"][0]["zones"] is not None
    return state


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(state: dict[str, Any]) -> dict[str, Any]:
        target: Any = state
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return state

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda s: [s], "Input should be a valid dictionary"),
        (_set(("tracks",), KeyError), "tracks: Field required"),
        (_set(("format",), 2), "format"),
        (_set(("tracks", 0, "id"), 0), "tracks.0.id"),
        (_set(("tracks", 0, "best", "box"), [1, 2, 3]), "tracks.0.best.box"),
        (_set(("tracks", 0, "sides"), {"h": 2}), "tracks.0.sides.h"),
        (_set(("tracks", 1, "zones"), [["sq", 1.0]]), "tracks.1.zones.0"),
        (_set(("tracks", 0, "label"), None), "tracks.0.label"),
        (_set(("tracks", 0, "surprise"), 1), "tracks.0.surprise"),
        (_set(("stream",), "cam2"), "of stream 'cam2'"),
        (lambda s: s | {"tracks": [s["tracks"][0], s["tracks"][0]]}, "a track id appears twice"),
    ],
)
def test_a_malformed_state_is_refused_and_changes_nothing(change: Any, says: str) -> None:
    cfg, steps, _ = random_script()
    maker = EventMaker("trk", "cam1", cfg)
    play(maker, steps[:10])
    before = maker.state()
    with pytest.raises(ValueError, match="state") as refused:
        maker.restore(change(copy.deepcopy(valid_state())))
    assert says in str(refused.value)
    assert maker.state() == before
