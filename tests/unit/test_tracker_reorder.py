"""One camera's results back in seq order: gaps waited for within the window, then skipped; late ones refused."""

from __future__ import annotations

from sink.tracker.reorder import Reorder


def order(window_frames: int = 3, window_ms: int = 1000) -> Reorder[str]:
    return Reorder(window_frames, window_ms)


def test_in_order_results_go_at_once() -> None:
    r = order()
    for seq in range(3):
        assert r.push(seq, f"r{seq}", 0)
    assert r.ready(0) == [(0, "r0"), (0, "r1"), (0, "r2")]
    assert r.next_seq == 3 and len(r) == 0


def test_out_of_order_results_are_put_back_in_order() -> None:
    r = order()
    for seq in (1, 0, 3, 2):
        r.push(seq, f"r{seq}", 0)
    assert [item for _, item in r.ready(0)] == ["r0", "r1", "r2", "r3"]


def test_a_gap_is_waited_for_within_the_window_then_skipped() -> None:
    r = order(window_frames=3, window_ms=1000)
    r.push(0, "r0", 0)
    assert r.ready(0) == [(0, "r0")]
    r.push(2, "r2", 100)
    r.push(3, "r3", 200)
    assert r.ready(500) == []  # 1 may still come
    assert r.ready(1100) == [(1, "r2"), (0, "r3")]  # waited window_ms since r2 came: 1 skipped
    assert not r.push(1, "r1", 1200)  # too late now


def test_a_gap_is_skipped_once_window_frames_follow_it() -> None:
    r = order(window_frames=2, window_ms=60_000)
    r.push(0, "r0", 0)
    r.ready(0)
    for seq in (2, 3):
        r.push(seq, f"r{seq}", 0)
    assert r.ready(0) == []
    r.push(4, "r4", 0)
    assert r.ready(0) == [(1, "r2"), (0, "r3"), (0, "r4")]


def test_the_first_result_waits_for_lower_seqs_unless_it_is_zero() -> None:
    r = order(window_frames=5, window_ms=1000)
    r.push(7, "r7", 0)
    assert r.ready(10) == []  # 5 or 6 may be on their way from another replica
    r.push(5, "r5", 20)
    assert r.ready(500) == []
    r.push(6, "r6", 600)
    assert r.ready(1000) == [(0, "r5"), (0, "r6"), (0, "r7")]  # nothing counted as skipped before the first
    r.push(9, "r9", 1000)
    assert r.ready(1500) == []  # 8 is waited for, from when 9 came
    assert r.ready(2000) == [(1, "r9")]
    fresh = order()
    fresh.push(0, "r0", 0)
    assert fresh.ready(0) == [(0, "r0")]


def test_duplicates_and_late_results_are_refused() -> None:
    r = order()
    assert r.push(1, "a", 0)
    assert not r.push(1, "b", 0)  # a re-delivery answered twice
    r.next_seq = 1
    assert r.ready(0) == [(0, "a")]
    assert not r.push(0, "old", 0)


def test_a_checkpointed_position_continues() -> None:
    r = order()
    r.next_seq = 10
    assert not r.push(9, "done before", 0)
    r.push(11, "r11", 0)
    r.push(10, "r10", 0)
    assert [item for _, item in r.ready(0)] == ["r10", "r11"]
