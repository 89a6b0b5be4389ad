"""The back-off policy: delays grow and cap, reset after a success, jitter spreads them, a stop cuts a wait short."""

from __future__ import annotations

import threading
import time

import pytest

from common.backoff import Backoff


def test_without_jitter_delays_double_up_to_the_cap_and_reset_starts_over() -> None:
    backoff = Backoff(0.5, 30.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.attempt == 8
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() == 0.5


def test_jitter_keeps_each_delay_between_its_fixed_share_and_the_ceiling_and_spreads_them() -> None:
    ceilings = [1, 2, 4, 8, 8, 8]
    delays = []
    for _ in range(200):
        backoff = Backoff(1.0, 8.0, jitter=0.5)
        run = [backoff.next_delay() for _ in ceilings]
        assert all(c / 2 <= d <= c for d, c in zip(run, ceilings, strict=True))
        delays.append(run[-1])
    assert max(delays) - min(delays) > 1.0  # many clients failing together do not retry in lockstep
    full = Backoff(1.0, 8.0, jitter=1.0)
    assert all(0 <= full.next_delay() <= c for c in ceilings)


def test_a_cap_below_the_first_delay_caps_every_delay() -> None:
    backoff = Backoff(5.0, 2.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(3)] == [2, 2, 2]


@pytest.mark.parametrize(("initial", "cap", "jitter"), [(0, 1, 0.5), (1, 0, 0.5), (1, 2, 1.5), (1, 2, -0.1)])
def test_nonsense_settings_are_refused(initial: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="back-off"):
        Backoff(initial, cap, jitter)


def test_wait_sleeps_the_next_delay_and_says_no_stop_was_asked() -> None:
    backoff, stop = Backoff(0.05, 1.0, jitter=0.0), threading.Event()
    t0 = time.monotonic()
    assert backoff.wait(stop) is False
    assert time.monotonic() - t0 >= 0.045 and backoff.attempt == 1


def test_wait_returns_early_when_the_stop_is_set() -> None:
    backoff, stop = Backoff(30.0, 60.0, jitter=0.0), threading.Event()
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    assert backoff.wait(stop) is True
    assert time.monotonic() - t0 < 5.0


def test_wait_takes_a_delay_already_asked_for_and_logged() -> None:
    backoff, stop = Backoff(30.0, 60.0, jitter=0.0), threading.Event()
    delay = backoff.next_delay()
    t0 = time.monotonic()
    assert backoff.wait(stop, 0.01) is False
    assert time.monotonic() - t0 < delay and backoff.attempt == 1  # the given delay, no second attempt counted
