"""ByteTracker on synthetic detections: ids through walks, crossings and gaps, weak detections, uneven sampling,
classes, checkpoints."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

from common.wire import Detection
from sink.tracker import TrackerSinkConfig
from sink.tracker.bytetrack import ByteTracker, FrameTracks, Match

T0 = 1_700_000_000.0


def det(
    cx: float, cy: float, *, size: float = 40.0, score: float = 0.9, label: str = "circle", class_id: int = 0
) -> Detection:
    half = size / 2
    return Detection(label=label, class_id=class_id, score=score, box=(cx - half, cy - half, cx + half, cy + half))


def ids(tracks: FrameTracks) -> list[int]:
    """The track of each detection that is in one, in detection order."""
    return [m.track_id for m in tracks.matches]


def run(tracker: ByteTracker, frames: list[tuple[float, list[Detection]]]) -> list[FrameTracks]:
    return [tracker.update(dets, ts) for ts, dets in frames]


def walk(start: float, speed: float, times: list[float], y: float = 200.0, **kw: Any) -> list[Detection]:
    """One detection per time, moving along x at ``speed`` pixels per second from ``start`` at T0."""
    return [det(start + speed * (t - T0), y, **kw) for t in times]


def test_ids_are_stable_through_a_straight_walk_and_start_once() -> None:
    tracker = ByteTracker()
    times = [T0 + i / 10 for i in range(40)]
    a = walk(100, 150, times)
    b = walk(700, -120, times, y=400)
    out = run(tracker, [(t, [da, db]) for t, da, db in zip(times, a, b, strict=True)])
    assert all(len(f.matches) == 2 for f in out)
    first = ids(out[0])
    assert len(set(first)) == 2 and all(ids(f) == first for f in out)
    # Confirmed at the third hit (min_hits=3), started exactly then, never ended.
    assert [m.confirmed for f in out for m in f.matches[:1]] == [False, False] + [True] * 38
    assert [i for i, f in enumerate(out) if any(m.started for m in f.matches)] == [2]
    assert all(f.ended == [] for f in out)


def test_two_objects_of_the_same_class_crossing_keep_their_ids() -> None:
    # Head-on, 12 px apart vertically: the boxes overlap almost fully for several frames. Motion is all that tells
    # them apart, so this holds while they keep their speeds; two that swap speeds while overlapping may swap ids.
    tracker = ByteTracker()
    times = [T0 + i / 10 for i in range(50)]
    left = walk(100, 200, times, y=200)
    right = walk(1100, -200, times, y=212)
    out = run(tracker, [(t, [a, b]) for t, a, b in zip(times, left, right, strict=True)])
    overlapping = [i for i, (a, b) in enumerate(zip(left, right, strict=True)) if abs(a.box[0] - b.box[0]) < 40]
    assert overlapping, "the walks must cross"
    assert all(ids(f) == ids(out[0]) for f in out)


def test_a_gap_shorter_than_max_age_keeps_the_id_a_longer_one_ends_it_once() -> None:
    tracker = ByteTracker(max_age_s=2.0)
    times = [T0 + i / 10 for i in range(100)]
    seen = walk(100, 50, times)
    # Visible for 1 s, hidden 1.5 s, visible 1 s, hidden 2.5 s, visible again; frames keep coming throughout.
    visible = [i < 10 or 25 <= i < 35 or i >= 60 for i in range(100)]
    out = run(tracker, [(t, [d] if v else []) for t, d, v in zip(times, seen, visible, strict=True)])
    first = ids(out[0])[0]
    assert {ids(out[i])[0] for i in range(35) if visible[i]} == {first}
    # Last seen at frame 34 (t = 3.4 s): it ends at the first frame more than 2 s later, frame 55, and only then.
    assert [(i, f.ended) for i, f in enumerate(out) if f.ended] == [(55, [first])]
    later = {ids(out[i])[0] for i in range(60, 100)}
    assert len(later) == 1 and later.pop() > first


def test_a_gap_of_exactly_max_age_keeps_the_track() -> None:
    tracker = ByteTracker(max_age_s=1.0, min_hits=1)
    first = ids(tracker.update([det(100, 100)], T0))[0]
    assert tracker.update([], T0 + 1.0).ended == []
    assert ids(tracker.update([det(100, 100)], T0 + 1.0)) == [first]
    assert tracker.update([], T0 + 2.0 + 1e-6).ended == [first]
    # Two at once: the one a second old stays while the older one ends.
    older = ids(tracker.update([det(100, 100)], T0 + 3.0))[0]
    newer = ids(tracker.update([det(500, 500)], T0 + 3.5))[0]
    assert tracker.update([], T0 + 4.5).ended == [older]
    assert ids(tracker.update([det(500, 500)], T0 + 4.5)) == [newer]


def test_weak_detections_keep_a_track_alive_but_never_start_one() -> None:
    tracker = ByteTracker(max_age_s=0.5)
    times = [T0 + i / 10 for i in range(60)]
    path = walk(100, 100, times)
    # Strong for 5 frames, then weak (above low_score) for the rest: the track goes on under the same id.
    out = run(tracker, [(t, [d if i < 5 else d.model_copy(update={"score": 0.3})]) for i, (t, d) in enumerate(
        zip(times, path, strict=True))])  # fmt: skip
    assert {ids(f)[0] for f in out} == {ids(out[0])[0]} and all(len(f.matches) == 1 for f in out)

    # Weak detections alone start nothing; nor do they carry a tentative track (one strong hit) to confirmation.
    alone = ByteTracker()
    assert all(f.matches == [] for f in run(alone, [(t, [d.model_copy(update={"score": 0.4})]) for t, d in zip(
        times, path, strict=True)]))  # fmt: skip
    tentative = ByteTracker()
    assert len(tentative.update([path[0]], times[0]).matches) == 1
    assert all(f.matches == [] for f in run(tentative, [(t, [d.model_copy(update={"score": 0.4})]) for t, d in zip(
        times[1:], path[1:], strict=True)]))  # fmt: skip

    # Below low_score they do not count at all: the confirmed track ends as if unseen.
    faint = ByteTracker(max_age_s=0.5)
    first = run(faint, [(t, [d]) for t, d in zip(times[:5], path[:5], strict=True)])
    rest = run(faint, [(t, [d.model_copy(update={"score": 0.05})]) for t, d in zip(times[5:], path[5:], strict=True)])
    assert all(f.matches == [] for f in rest)
    assert [f.ended for f in rest if f.ended] == [[ids(first[0])[0]]]


def test_weak_detections_serve_confirmed_tracks_lost_ones_too_when_they_overlap_well() -> None:
    tracker = ByteTracker(min_hits=1)
    run(tracker, [(T0 + i / 10, [det(100, 100)]) for i in range(3)])
    # A weak detection overlapping well keeps it; one 20-odd px off the prediction (IoU about 0.3, under
    # low_match_iou) does not.
    assert ids(tracker.update([det(105, 100, score=0.3)], T0 + 0.3)) == [1]
    assert tracker.update([det(85, 100, score=0.3)], T0 + 0.4).matches == []
    # Missed in that update (lost): a weak detection on it still re-finds it (unlike ByteTrack's own rule).
    assert ids(tracker.update([det(105, 100, score=0.3)], T0 + 0.5)) == [1]
    # A tentative track never takes one: weak detections make no track.
    fresh = ByteTracker(min_hits=3)
    fresh.update([det(300, 300)], T0)
    assert fresh.update([det(300, 300, score=0.3)], T0 + 0.1).matches == []


def test_each_track_takes_its_own_detection_when_the_rounds_match_them_out_of_order() -> None:
    # The first track's detection is weak (matched in round 2), the second's strong (round 1): each filter must
    # still be corrected by its own detection.
    tracker = ByteTracker(min_hits=1)
    run(tracker, [(T0 + i / 10, [det(100 + 10 * i, 100), det(400, 300)]) for i in range(5)])
    out = tracker.update([det(150, 100, score=0.3), det(400, 300)], T0 + 0.5)
    assert ids(out) == [1, 2]
    boxes = [t["box"] for t in tracker.state()["tracks"]]
    assert boxes[0][:2] == pytest.approx([150, 100], abs=3)
    assert boxes[1][:2] == pytest.approx([400, 300], abs=3)


def test_a_tentative_track_that_misses_is_gone_and_one_that_expires_ends_silently() -> None:
    tracker = ByteTracker()
    assert ids(tracker.update([det(100, 100)], T0)) == [1]
    tracker.update([], T0 + 0.1)  # missed in a frame with nothing
    assert ids(tracker.update([det(100, 100)], T0 + 0.2)) == [2]
    assert ids(tracker.update([det(500, 500)], T0 + 0.3)) == [3]  # missed in a frame with something else
    out = run(tracker, [(T0 + 0.4 + i / 10, [det(100, 100)]) for i in range(3)])
    assert {ids(f)[0] for f in out} == {4} and out[-1].matches[0].started
    # A frame more than max_age_s later: the confirmed track ends, a tentative one beside it goes without a word.
    tracker.update([det(100, 100), det(400, 400)], T0 + 0.7)
    assert tracker.update([], T0 + 3.0).ended == [4]
    assert tracker.state()["tracks"] == []


def test_the_filter_is_the_textbook_kalman_filter() -> None:
    """Our vectorised filter against the plain matrix equations, over uneven steps: same box, velocity, covariance."""
    import numpy as np

    from sink.tracker import bytetrack as bt

    rng = np.random.default_rng(5)
    tracker = ByteTracker(min_hits=1, max_age_s=10)
    t, cx, cy, w, h = T0, 300.0, 200.0, 120.0, 60.0
    x = np.zeros(8)
    cov = np.zeros((8, 8))
    noise = np.zeros(4)
    for step in range(25):
        dt = t + float(rng.choice([0.05, 0.1, 0.3])) - t  # as the tracker sees it, rounded near T0
        t += dt
        cx, cy, w, h = cx + 60 * dt, cy - 20 * dt, w + 5 * dt, h + 2 * dt
        z = np.array([cx, cy, w, h]) + rng.normal(0, 1.5, 4)
        box = (z[0] - z[2] / 2, z[1] - z[3] / 2, z[0] + z[2] / 2, z[1] + z[3] / 2)
        tracker.update([Detection(label="car", class_id=2, score=0.9, box=box)], t)
        size2 = np.array([z[2], z[3], z[2], z[3]]) ** 2
        if step == 0:
            x[:4] = z
            cov = np.diag(np.concatenate([bt._INIT_POS_VAR * size2, bt._INIT_VEL_VAR * size2]))
        else:
            f = np.eye(8)
            f[:4, 4:] = dt * np.eye(4)
            q = np.diag(np.concatenate([bt._Q_POS * dt * noise, bt._Q_VEL * dt * noise]))
            x, cov = f @ x, f @ cov @ f.T + q
            obs = np.eye(4, 8)
            gain = cov @ obs.T @ np.linalg.inv(obs @ cov @ obs.T + np.diag(bt._MEASURE_VAR * size2))
            x = x + gain @ (z - obs @ x)
            cov = (np.eye(8) - gain @ obs) @ cov
        noise = size2
    track = tracker.state()["tracks"][0]
    assert track["hits"] == 25
    assert track["box"] + track["velocity"] == pytest.approx(x.tolist(), rel=1e-9)
    blocks = np.array(track["covariance"]).reshape(3, 4)
    assert blocks[0] == pytest.approx(np.diag(cov)[:4], rel=1e-9)
    assert blocks[1] == pytest.approx(np.diag(cov, 4), rel=1e-9)
    assert blocks[2] == pytest.approx(np.diag(cov)[4:], rel=1e-9)
    assert track["velocity"][:2] == pytest.approx([60, -20], abs=15)


def test_uneven_timestamps_predict_by_elapsed_time() -> None:
    # A 40 px box at 200 px/s moves half its width every 0.1 s frame: a prediction that counted frames instead of
    # seconds would be 40 px short after a 0.3 s gap, and miss it.
    tracker = ByteTracker(max_age_s=5.0)
    steps = [0.1] * 15 + [0.3, 0.1, 0.3, 0.1, 0.3, 0.1]  # gaps of 3 frames then 1 frame
    times = [T0 + sum(steps[:i]) for i in range(len(steps) + 1)]
    path = walk(100, 200, times)
    out = run(tracker, [(t, [d]) for t, d in zip(times, path, strict=True)])
    assert {ids(f)[0] for f in out} == {ids(out[0])[0]} and all(len(f.matches) == 1 for f in out)
    track = tracker.state()["tracks"][0]
    assert track["velocity"][0] == pytest.approx(200, rel=0.02)
    assert abs(track["velocity"][1]) < 2
    # An update with nothing seen is a pure prediction: 0.3 s ahead is 60 px along x, nothing along y.
    x = track["box"][0]
    tracker.update([], times[-1] + 0.3)
    moved = tracker.state()["tracks"][0]["box"]
    assert moved[0] - x == pytest.approx(0.3 * track["velocity"][0], abs=1e-3)  # ts has 0.24 us steps near T0
    assert moved[1] == pytest.approx(track["box"][1], abs=1)


def test_a_detection_never_joins_a_track_of_another_class() -> None:
    tracker = ByteTracker(min_hits=1)
    circle = ids(tracker.update([det(100, 100)], T0))[0]
    # The same box as a square (another class), and under a third label with the circle's class_id.
    out = tracker.update(
        [det(100, 100, label="square", class_id=1), det(101, 100, label="ring", class_id=0), det(100, 100)], T0 + 0.1
    )
    assert out.matches[2].track_id == circle
    assert circle not in ids(out)[:2] and len(set(ids(out))) == 3
    # A square alone where a circle is expected starts a track of its own, and the circle's goes on after it.
    other = ByteTracker(min_hits=1)
    run(other, [(T0 + i / 10, [det(100 + i, 100)]) for i in range(5)])
    square = other.update([det(105, 100, label="square", class_id=1)], T0 + 0.5)
    assert ids(square) == [2]
    assert ids(other.update([det(106, 100)], T0 + 0.6)) == [1]


def test_of_two_strong_detections_on_a_track_the_surer_wins_at_a_similar_overlap() -> None:
    # ByteTrack fuses the score into the cost: IoU 0.67 at score 0.55 loses to IoU 0.54 at score 0.95 (and, below
    # new_track_score, starts nothing).
    tracker = ByteTracker(min_hits=1)
    run(tracker, [(T0 + i / 10, [det(100, 100)]) for i in range(5)])
    out = tracker.update([det(108, 100, score=0.55), det(88, 100, score=0.95)], T0 + 0.5)
    assert out.matches == [Match(1, 1, True, False)]


def scene(seed: int) -> list[tuple[float, list[Detection]]]:
    """A busy few seconds: four walkers of two classes, crossings, weak and missing detections, uneven times."""
    import random

    rnd = random.Random(seed)
    out = []
    t = T0
    walkers = [  # x, y, vx, vy (pixels, per second), label, the frames it is in
        (100, 150, 80, 0, "circle", range(80)),
        (900, 170, -90, 10, "circle", range(5, 50)),
        (300, 400, 60, -20, "square", range(30)),
        (500, 60, 0, 70, "square", range(20, 80)),
    ]
    for i in range(80):
        t += rnd.choice([0.05, 0.1, 0.1, 0.2, 0.3])
        dets = []
        for x, y, vx, vy, label, frames in walkers:
            if i not in frames or rnd.random() < 0.1:
                continue
            score = rnd.choice([0.9, 0.8, 0.7, 0.3])
            dets.append(det(x + vx * (t - T0) + rnd.gauss(0, 2), y + vy * (t - T0) + rnd.gauss(0, 2), score=score,
                            label=label, class_id=label == "square"))  # fmt: skip
        out.append((t, dets))
    return out


@pytest.mark.parametrize("cut", [1, 17, 40, 79])
def test_state_restored_through_msgpack_continues_exactly(cut: int) -> None:
    frames = scene(7)
    whole = ByteTracker()
    expected = run(whole, frames)
    first = ByteTracker()
    head = run(first, frames[:cut])
    blob = msgpack.packb(first.state(), use_bin_type=True)
    second = ByteTracker()
    second.restore(msgpack.unpackb(blob, raw=False))
    assert second.state() == first.state()
    tail = run(second, frames[cut:])
    assert head + tail == expected
    assert second.state() == whole.state()
    assert sum(len(f.ended) for f in expected) > 0 and max(m.track_id for f in expected for m in f.matches) > 4


def test_an_empty_tracker_round_trips() -> None:
    tracker = ByteTracker()
    fresh = ByteTracker()
    fresh.restore(msgpack.unpackb(msgpack.packb(tracker.state(), use_bin_type=True), raw=False))
    assert fresh.state() == tracker.state()
    assert ids(fresh.update([det(5, 5)], T0)) == [1]


def corrupt(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(state: dict[str, Any]) -> None:
        target: Any = state
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return apply


MALFORMED: dict[str, Callable[[dict[str, Any]], None]] = {
    "format": corrupt(("format",), "sort"),
    "version": corrupt(("version",), 2),
    "no ts": corrupt(("ts",), KeyError),
    "ts inf": corrupt(("ts",), math.inf),
    "ts text": corrupt(("ts",), "now"),
    "next_id zero": corrupt(("next_id",), 0),
    "next_id bool": corrupt(("next_id",), True),
    "tracks map": corrupt(("tracks",), {}),
    "track list": corrupt(("tracks", 0), [1, 2]),
    "extra key": corrupt(("tracks", 0, "colour"), "red"),
    "no hits": corrupt(("tracks", 0, "hits"), KeyError),
    "id zero": corrupt(("tracks", 0, "id"), 0),
    "id not below next_id": corrupt(("tracks", 1, "id"), 10_000),
    "ids out of order": corrupt(("tracks", 1, "id"), 1),
    "class_id negative": corrupt(("tracks", 0, "class_id"), -1),
    "label number": corrupt(("tracks", 0, "label"), 3),
    "hits float": corrupt(("tracks", 0, "hits"), 2.0),
    "tracked int": corrupt(("tracks", 0, "tracked"), 1),
    "last_seen nan": corrupt(("tracks", 0, "last_seen"), math.nan),
    "box short": corrupt(("tracks", 0, "box"), [1.0, 2.0, 3.0]),
    "box text": corrupt(("tracks", 0, "box", 0), "x"),
    "velocity inf": corrupt(("tracks", 0, "velocity", 1), -math.inf),
    "covariance tuple": corrupt(("tracks", 0, "covariance"), (1.0,) * 12),
    "width zero": corrupt(("tracks", 0, "box", 2), 0.0),
    "variance negative": corrupt(("tracks", 0, "covariance", 0), -1.0),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_state_is_refused_and_changes_nothing(name: str) -> None:
    tracker = ByteTracker()
    run(tracker, scene(3)[:10])
    assert len(tracker.state()["tracks"]) >= 2
    state = copy.deepcopy(tracker.state())
    MALFORMED[name](state)
    before = tracker.state()
    with pytest.raises(ValueError, match="tracker state"):
        tracker.restore(state)
    assert tracker.state() == before
    with pytest.raises(ValueError, match="tracker state"):
        tracker.restore([])  # type: ignore[arg-type]


def test_flush_ends_the_confirmed_tracks_only_and_ids_are_never_reused() -> None:
    tracker = ByteTracker()
    times = [T0 + i / 10 for i in range(5)]
    confirmed = walk(100, 100, times)
    out = run(tracker, [(t, [d] + ([det(600, 600)] if i == 4 else [])) for i, (t, d) in enumerate(
        zip(times, confirmed, strict=True))])  # fmt: skip
    confirmed_id, tentative_id = ids(out[-1])
    assert [m.confirmed for m in out[-1].matches] == [True, False]
    assert tracker.flush(times[-1] + 1) == [confirmed_id]
    assert tracker.state()["tracks"] == [] and tracker.flush(times[-1] + 2) == []
    again = tracker.update([confirmed[-1]], times[-1] + 3)
    assert ids(again) == [tentative_id + 1]


def test_min_hits_one_confirms_and_starts_at_birth() -> None:
    tracker = ByteTracker(min_hits=1)
    assert tracker.update([det(50, 50)], T0).matches == [Match(0, 1, True, True)]
    assert tracker.update([det(52, 50)], T0 + 0.1).matches == [Match(0, 1, True, False)]


def test_matches_come_in_detection_order_with_weak_and_unusable_detections_left_out() -> None:
    tracker = ByteTracker(min_hits=1)
    first = tracker.update([det(100, 100), det(400, 100), det(700, 100)], T0)
    assert [m.index for m in first.matches] == [0, 1, 2] and ids(first) == [1, 2, 3]
    nan = Detection(label="circle", class_id=0, score=0.9, box=(math.nan, 90.0, 110.0, 110.0))
    reversed_box = Detection(label="circle", class_id=0, score=0.9, box=(110.0, 90.0, 90.0, 110.0))
    infinite = Detection(label="circle", class_id=0, score=0.9, box=(90.0, 90.0, math.inf, 110.0))
    out = tracker.update([nan, det(700, 101), reversed_box, det(400, 99, score=0.3), infinite, det(101, 100)], T0 + 0.1)
    assert [(m.index, m.track_id) for m in out.matches] == [(1, 3), (3, 2), (5, 1)]
    assert tracker.update([det(102, 100)], T0 + 0.2).matches == [Match(0, 1, True, False)]


def test_an_earlier_timestamp_moves_nothing() -> None:
    tracker = ByteTracker(min_hits=1)
    run(tracker, [(T0 + i / 10, [det(100 + 10 * i, 100)]) for i in range(5)])
    before = tracker.state()["tracks"][0]["box"]
    assert ids(tracker.update([det(140, 100)], T0)) == [1]
    assert tracker.state()["ts"] == T0 + 0.4 == tracker.state()["tracks"][0]["last_seen"]
    assert tracker.state()["tracks"][0]["box"][0] == pytest.approx(before[0], abs=1)
    with pytest.raises(ValueError, match="not finite"):
        tracker.update([], math.nan)


def test_from_settings_takes_the_sink_settings() -> None:
    cfg = TrackerSinkConfig(
        name="tracks",
        high_score=0.7,
        low_score=0.2,
        new_track_score=0.8,
        match_iou=0.3,
        low_match_iou=0.6,
        min_hits=4,
        max_age_s=7.5,
    )
    tracker = ByteTracker.from_settings(cfg)
    got = {k: getattr(tracker, k) for k in ("high_score", "low_score", "new_track_score", "match_iou")}
    assert got == {"high_score": 0.7, "low_score": 0.2, "new_track_score": 0.8, "match_iou": 0.3}
    assert (tracker.low_match_iou, tracker.min_hits, tracker.max_age_s) == (0.6, 4, 7.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"low_score": 0.6, "high_score": 0.5},
        {"high_score": 0.0, "low_score": 0.0},
        {"new_track_score": 0.0},
        {"match_iou": 1.0},
        {"low_match_iou": 0.0},
        {"min_hits": 0},
        {"max_age_s": 0.0},
        {"max_age_s": math.inf},
    ],
)
def test_settings_out_of_range_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ByteTracker(**kwargs)


def walkers(count: int, frames: int) -> Iterator[tuple[float, list[Detection]]]:
    for i in range(frames):
        t = T0 + i / 10
        yield t, [det(60 + 90 * k + 30 * (t - T0), 100 + 40 * k, score=0.9) for k in range(count)]


def test_many_tracks_keep_their_ids() -> None:
    tracker = ByteTracker()
    out = run(tracker, list(walkers(50, 30)))
    assert all(ids(f) == ids(out[0]) for f in out) and len(set(ids(out[0]))) == 50


@pytest.mark.parametrize(("lost_buffer", "same_track"), [(0.0, False), (0.4, True)])
def test_a_lost_track_whose_prediction_drifted_is_found_again_on_buffered_boxes(
    lost_buffer: float, same_track: bool
) -> None:
    tracker = ByteTracker(min_hits=1, lost_buffer=lost_buffer, recover_radius=0.0)
    run(tracker, [(T0 + i / 5, [det(100 + 10 * i, 100)]) for i in range(5)])  # 50 px/s to the right
    for i in range(5, 10):  # unseen for a second while it slowed down: the prediction ran on
        tracker.update([], T0 + i / 5)
    out = tracker.update([det(160, 100)], T0 + 2.0)  # 40 px short of x = 200: IoU 0 plain, 0.29 buffered
    assert (ids(out) == [1]) is same_track, ids(out)


@pytest.mark.parametrize(("recover_radius", "same_track"), [(0.0, False), (1.0, True)])
def test_an_object_missed_for_seconds_comes_back_under_its_id_when_nothing_of_its_class_is_nearer(
    recover_radius: float, same_track: bool
) -> None:
    tracker = ByteTracker(min_hits=1, max_age_s=5.0, recover_radius=recover_radius)
    run(tracker, [(T0 + i / 5, [det(100 + 4 * i, 100), det(400, 300, label="square", class_id=1)]) for i in range(5)])
    for i in range(5, 15):  # two seconds behind something: the circle is not seen, the square is
        tracker.update([det(400, 300, label="square", class_id=1)], T0 + i / 5)
    # It reappears 60 px (1.5 box sizes) from where the prediction ran to: no overlap, within 1 x 3 box sizes.
    out = tracker.update([det(216, 160), det(400, 300, label="square", class_id=1)], T0 + 3.0)
    assert (ids(out)[0] == 1) is same_track, ids(out)
    assert ids(out)[1] == 2
    # A square appearing there is never given to the circle's track.
    other = ByteTracker(min_hits=1, max_age_s=5.0, recover_radius=recover_radius)
    run(other, [(T0 + i / 5, [det(100 + 4 * i, 100)]) for i in range(5)])
    other.update([], T0 + 2.0)
    assert ids(other.update([det(140, 100, label="square", class_id=1)], T0 + 2.2)) == [2]
