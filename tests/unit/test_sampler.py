from __future__ import annotations

import itertools

import pytest

from ingest.sampler import Sampler


def picks(sampler: Sampler, times: list[float]) -> list[int]:
    return [i for i, t in enumerate(times) if sampler.due(t)]


def test_every_n_keeps_the_first_and_every_n_th() -> None:
    assert picks(Sampler(every_n=3), [0.0] * 10) == [0, 3, 6, 9]
    assert picks(Sampler(), [0.0] * 4) == [0, 1, 2, 3]


@pytest.mark.parametrize(("native", "target"), [(25.0, 4.0), (30.0, 7.0), (29.97, 5.0), (10.0, 10.0), (12.0, 5.0)])
def test_a_target_rate_does_not_drift(native: float, target: float) -> None:
    seconds = 600
    times = [i / native for i in range(int(seconds * native))]
    kept = picks(Sampler(fps=target), times)
    assert abs(len(kept) - seconds * target) <= 1
    # Evenly spread: no gap longer than one target interval plus one source frame (and the early-tolerance).
    gaps = [times[b] - times[a] for a, b in itertools.pairwise(kept)]
    assert max(gaps) <= 1.1 / target + 1 / native + 1e-9


def test_a_faster_target_than_the_source_keeps_every_frame() -> None:
    assert picks(Sampler(fps=50.0), [i / 10 for i in range(20)]) == list(range(20))


def test_a_jittery_source_at_the_target_rate_keeps_every_frame() -> None:
    times = [i / 10 + (0.004 if i % 2 else -0.004) for i in range(1, 100)]
    assert len(picks(Sampler(fps=10.0), times)) == len(times)


def test_after_a_stall_the_schedule_restarts_instead_of_bursting() -> None:
    sampler = Sampler(fps=2.0)
    before = picks(sampler, [i / 10 for i in range(10)])  # 1 s at 10 fps
    assert before == [0, 5]
    after = [sampler.due(t) for t in (30.0, 30.1, 30.2, 30.3, 30.4, 30.5)]  # the source was down for ~29 s
    assert after == [True, False, False, False, False, True]
