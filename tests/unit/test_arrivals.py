"""A live camera's pace as the batcher learns it, on explicit times: which streams are due and in what order (the
not seen yet, the long waiting, then the freshest frames), the back-off of a stream whose frames stopped, a visit
that came too early, an ingest restarted, and how the lag from capture to landing follows the frames."""

from __future__ import annotations

import pytest

from common.wire import Frame
from detector.arrivals import MAX_BACKOFF_S, MIN_INTERVAL_S, PATIENCE, Arrivals

T = 1000.0
"""Capture times start here (UNIX seconds)."""
FPS5 = 0.2
LAG = 0.03
"""Seconds from capture to landing in Redis."""
READ = 0.01
"""Seconds from landing to being read."""


def frame(stream: str, seq: int, capture_ts: float, live: bool = True) -> Frame:
    return Frame(
        stream=stream,
        seq=seq,
        capture_ts=capture_ts,
        width=4,
        height=4,
        encoding="jpeg",
        image_width=4,
        image_height=4,
        data=b"x",
        live=live,
    )


def feed(arrivals: Arrivals, key: str, *frames: tuple[int, float], lag: float = LAG) -> None:
    """Each (seq, capture time) landed ``lag`` after capture and was read ``READ`` after that."""
    for seq, capture_ts in frames:
        arrivals.seen(key, frame(key, seq, capture_ts), capture_ts + lag, capture_ts + lag + READ)


def test_a_stream_not_seen_yet_is_due_at_once_and_ranks_before_every_known_stream() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "paced", (0, T), (1, T + FPS5))
    feed(arrivals, "unpaced", (0, T))
    now = T + 5.0  # long past both streams' due times and patience
    assert arrivals.freshest(["paced", "unpaced", "new"], now, 3)[0] == "new"
    assert arrivals.freshest(["paced", "unpaced", "new"], now, 1) == ["new"]
    assert arrivals.freshest(["new"], T, 1) == ["new"]
    assert arrivals.next_due(["new"], T) == 0.0


def test_two_frames_at_5_fps_give_the_pace_and_the_stream_is_due_once_its_next_frame_has_landed() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "cam", (0, T), (1, T + FPS5))
    lands = T + FPS5 + FPS5 + LAG  # the next frame's capture plus the lag
    assert arrivals.freshest(["cam"], lands - 0.01, 1) == []
    assert arrivals.next_due(["cam"], lands - 0.01) == pytest.approx(0.01)
    assert arrivals.freshest(["cam"], lands + 0.01, 1) == ["cam"]
    assert arrivals.next_due(["cam"], lands + 0.01) == 0.0


def test_among_due_streams_the_one_whose_newest_frame_landed_most_recently_comes_first() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "a", (0, T + 0.05), (1, T + 0.25))  # next frames captured at .45, .65, ...
    feed(arrivals, "b", (0, T + 0.10), (1, T + 0.30))  # .50, .70, ...
    feed(arrivals, "c", (0, T + 0.00), (1, T + 0.20))  # .40, .60, ...
    now = T + 0.62  # newest landed: b's of .50 (at .53), a's of .45 (at .48), c's of .40 (at .43)
    assert arrivals.freshest(["a", "b", "c"], now, 1) == ["b"]
    assert arrivals.freshest(["a", "b", "c"], now, 3) == ["b", "a", "c"]
    later = T + 0.645  # c's frame of .60 has landed (at .63), a's of .65 not yet: now c's is the freshest
    assert arrivals.freshest(["a", "b", "c"], later, 3) == ["c", "b", "a"]


def test_a_stream_past_its_patience_comes_first_while_its_newest_frame_is_fresh_and_not_when_stale() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "slow", (0, T), (1, T + 0.20))  # last taken at T + .24; frames at 1.00 (lands 1.03), 1.20, ...
    feed(arrivals, "other", (0, T + 0.64), (1, T + 0.84))  # its frame of 1.04 lands at 1.07
    feed(arrivals, "old", (0, T + 0.58), (1, T + 0.78))  # its frame of 0.98 lands at 1.01
    fresh = T + 1.08  # slow waited .84 s > PATIENCE intervals; its frame of 1.00 landed .05 s ago (< half of .2)
    assert fresh - (T + 0.20 + LAG + READ) > PATIENCE * FPS5
    assert arrivals.freshest(["other", "old", "slow"], fresh, 1) == ["slow"]
    assert arrivals.freshest(["other", "old", "slow"], fresh, 3) == ["slow", "other", "old"]
    stale = T + 1.20  # slow's frame of 1.00 landed .17 s ago: it ranks by that frame, between the others
    assert arrivals.freshest(["other", "old", "slow"], stale, 3) == ["other", "slow", "old"]


def test_a_burst_gives_no_pace_the_stream_is_due_at_once_and_ranks_by_how_long_it_waited() -> None:
    arrivals = Arrivals(retry_s=0.1)
    assert MIN_INTERVAL_S > 0.001  # the frames below come closer
    feed(arrivals, "burst", (0, T), (1, T + 0.001))  # read at T + .041
    feed(arrivals, "single", (0, T - 0.01))  # read at T + .03: no pace yet, waited longer
    feed(arrivals, "jump", (0, T + 0.10), (5, T + 0.11))  # 5 frames in .01 s: a backlog pushed at once
    feed(arrivals, "paced", (0, T - 0.30), (1, T - 0.10))  # due at T + .13, its newest frame (T + .10) fresher
    read = T + 0.001 + LAG + READ
    assert arrivals.freshest(["burst"], read, 1) == ["burst"]
    assert arrivals.next_due(["burst"], read) == 0.0
    now = T + 0.2
    assert arrivals.freshest(["paced", "jump", "burst", "single"], now, 4) == ["single", "burst", "jump", "paced"]
    assert not arrivals.late("burst", frame("burst", 2, T + 0.002), now)  # no pace: no frame is late
    arrivals.missed("burst", now)
    assert arrivals.next_due(["burst"], now) == pytest.approx(0.1 / 8)  # backs off from retry_s


def test_missed_visits_back_off_doubling_up_to_the_cap_and_a_frame_seen_resets_it() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "cam", (0, T), (1, T + FPS5))
    now = T + 0.5
    arrivals.missed("cam", now)
    assert arrivals.freshest(["cam"], now + FPS5 / 8 - 0.005, 1) == []
    assert arrivals.freshest(["cam"], now + FPS5 / 8 + 0.005, 1) == ["cam"]
    waits = []
    for _ in range(12):
        waits.append(arrivals.next_due(["cam"], now))
        now += 10.0
        arrivals.missed("cam", now)
    expected = [min(FPS5 / 8 * 2**i, MAX_BACKOFF_S) for i in range(12)]
    assert waits == pytest.approx(expected)
    assert waits[-1] == pytest.approx(MAX_BACKOFF_S)
    back = T + 604 * FPS5  # it comes back (seq 604, on its 5 fps since seq 0 at T) just after the last miss
    assert back > now
    feed(arrivals, "cam", (604, back))
    assert arrivals.next_due(["cam"], back + LAG + READ) < 2 * FPS5  # its pace again, not the 5 s back-off
    assert arrivals.freshest(["cam"], back + 2 * FPS5, 1) == ["cam"]


def test_missed_visits_to_a_stream_without_a_pace_back_off_from_retry_s() -> None:
    arrivals = Arrivals(retry_s=0.4)
    feed(arrivals, "cam", (0, T))
    arrivals.missed("cam", T + 1.0)
    assert arrivals.next_due(["cam"], T + 1.0) == pytest.approx(0.4 / 8)
    arrivals.missed("cam", T + 2.0)
    assert arrivals.next_due(["cam"], T + 2.0) == pytest.approx(0.4 / 4)


def test_a_stream_gone_for_good_stays_capped_at_the_longest_back_off() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "cam", (0, T), (1, T + FPS5))
    now = T + 1.0
    for _ in range(1100):  # a camera gone for an hour and a half, visited every MAX_BACKOFF_S (2.0 ** 1100 overflows)
        arrivals.missed("cam", now)
        now += MAX_BACKOFF_S
    assert arrivals.next_due(["cam"], now - MAX_BACKOFF_S) == pytest.approx(MAX_BACKOFF_S)
    assert arrivals.freshest(["cam"], now, 1) == ["cam"]


def test_a_frame_one_interval_older_than_the_one_the_visit_came_for_is_late() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "cam", (0, T), (1, T + FPS5))
    now = T + 0.65  # frames of .40 and .60 have landed: the visit came for seq 3
    assert arrivals.late("cam", frame("cam", 2, T + 0.40), now)
    assert not arrivals.late("cam", frame("cam", 3, T + 0.60), now)
    assert not arrivals.late("cam", frame("cam", 3, T + 0.25), now)  # a burst: as many frames on, early captured
    assert not arrivals.late("cam", frame("cam", 2, T + 0.58), now)  # older by less than half an interval
    assert not arrivals.late("cam", frame("cam", 1, T + FPS5), now)  # already seen
    assert not arrivals.late("new", frame("new", 2, T + 0.40), now)


def test_a_frame_read_within_a_quarter_interval_of_its_successor_landing_is_superseded_soon() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "cam", (0, T), (1, T + FPS5))
    landed = T + 0.40 + LAG  # seq 2; seq 3 lands at .63
    assert not arrivals.superseded_soon("cam", frame("cam", 2, T + 0.40), landed, landed + 0.14)
    assert arrivals.superseded_soon("cam", frame("cam", 2, T + 0.40), landed, landed + 0.16)
    far = T + 0.40 + 0.5  # a camera far behind: captured long before it landed, counted from its landing
    assert not arrivals.superseded_soon("cam", frame("cam", 2, T + 0.40), far, far + 0.1)
    assert not arrivals.superseded_soon("cam", frame("cam", 1, T + FPS5), landed, landed + 0.5)  # already seen
    assert not arrivals.superseded_soon("new", frame("new", 2, T + 0.40), landed, landed + 0.5)
    feed(arrivals, "burst", (0, T), (1, T + 0.001))  # no pace: nothing to tell its next frame by
    assert not arrivals.superseded_soon("burst", frame("burst", 2, T + 0.002), T, T + 5.0)


def test_a_stream_without_a_pace_has_no_late_frames() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "cam", (0, T))
    assert not arrivals.late("cam", frame("cam", 1, T + 0.2), T + 5.0)


def test_a_restarted_ingest_resets_the_cameras_pace() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "cam", (100, T), (101, T + FPS5))  # 5 fps: next due at T + .43
    assert arrivals.freshest(["cam"], T + 0.30, 1) == []
    feed(arrivals, "cam", (0, T + 0.25))  # restarted: read at T + .29, no pace known
    assert arrivals.freshest(["cam"], T + 0.30, 1) == ["cam"]
    assert arrivals.next_due(["cam"], T + 0.30) == 0.0
    feed(arrivals, "cam", (1, T + 0.35))  # 10 fps now
    assert arrivals.next_due(["cam"], T + 0.35) == pytest.approx(0.1 + LAG)


def test_landing_later_raises_the_lag_at_once_and_earlier_lowers_it_by_a_quarter_per_frame() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "cam", (0, T), lag=0.03)
    feed(arrivals, "cam", (1, T + 0.2), lag=0.10)
    assert arrivals.next_due(["cam"], T + 0.2) == pytest.approx(FPS5 + 0.10)
    feed(arrivals, "cam", (2, T + 0.4), lag=0.02)
    assert arrivals.next_due(["cam"], T + 0.4) == pytest.approx(FPS5 + 0.08)  # .10 - (.10 - .02) / 4
    feed(arrivals, "cam", (3, T + 0.6), lag=0.02)
    assert arrivals.next_due(["cam"], T + 0.6) == pytest.approx(FPS5 + 0.065)  # .08 - (.08 - .02) / 4
    feed(arrivals, "cam", (4, T + 0.8), lag=0.30)
    assert arrivals.next_due(["cam"], T + 0.8) == pytest.approx(FPS5 + 0.30)


def test_next_due_is_the_wait_for_the_first_stream_due() -> None:
    arrivals = Arrivals(retry_s=0.1)
    assert arrivals.next_due([], T) is None
    feed(arrivals, "a", (0, T), (1, T + 0.2))  # due at T + .43
    feed(arrivals, "b", (0, T + 0.1), (1, T + 0.3))  # due at T + .53
    assert arrivals.next_due(["b", "a"], T + 0.33) == pytest.approx(0.10)
    assert arrivals.next_due(["b"], T + 0.33) == pytest.approx(0.20)
    assert arrivals.next_due(["b", "a"], T + 0.50) == 0.0
    assert arrivals.next_due(["b", "a", "new"], T + 0.33) == 0.0


def test_a_forgotten_stream_is_unknown_again() -> None:
    arrivals = Arrivals(retry_s=0.1)
    feed(arrivals, "a", (0, T), (1, T + 0.2))
    feed(arrivals, "b", (0, T), (1, T + 0.2))
    assert arrivals.freshest(["a", "b"], T + 0.30, 2) == []
    arrivals.forget("a")
    arrivals.forget("gone")  # unknown: nothing to forget
    assert arrivals.freshest(["a", "b"], T + 0.30, 2) == ["a"]
    assert arrivals.next_due(["a", "b"], T + 0.30) == 0.0
