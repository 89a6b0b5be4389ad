"""RuleBook: which results raise "on" and "off" alerts, frame by frame."""

from __future__ import annotations

from typing import Any

import pytest

from common.geometry import inside
from common.wire import Alert, Detection, Result, Timings
from sink.alerts import AlertSinkConfig
from sink.alerts.rules import RuleBook

T0 = 1_700_000_000.0
WIDTH, HEIGHT = 200, 100


def det(label: str = "person", score: float = 0.9, centre: tuple[float, float] = (100, 50)) -> Detection:
    """A 20x10 box around ``centre`` (original-frame pixels)."""
    cx, cy = centre
    return Detection(label=label, class_id=0, score=score, box=(cx - 10, cy - 5, cx + 10, cy + 5))


def result(*dets: Detection, stream: str = "cam1", seq: int = 0, ts: float | None = None) -> Result:
    capture = T0 + seq if ts is None else ts
    return Result(
        frame_id=f"{round(capture * 1000)}-0",
        stream=stream,
        seq=seq,
        capture_ts=capture,
        width=WIDTH,
        height=HEIGHT,
        pool="main",
        replica="r0",
        engine="torch",
        device="cpu",
        batch_size=1,
        published_ts=capture + 0.1,
        timings=Timings(queue_ms=1, decode_ms=1, inference_ms=1, postprocess_ms=1, end_to_end_ms=5),
        detections=list(dets),
    )


def book(*rules: dict[str, Any]) -> RuleBook:
    base = {"actions": ["log"], "cooldown_s": 0}
    return RuleBook(
        AlertSinkConfig.model_validate(
            {
                "name": "alerts",
                "rules": [base | r for r in rules],
                "actions": {"log": {"kind": "log"}, "hook": {"kind": "webhook", "url": "http://127.0.0.1/x"}},
            }
        )
    )


def states(rb: RuleBook, frames: list[list[Detection]], stream: str = "cam1") -> list[list[tuple[str, str, str]]]:
    """(rule, label, state) of the alerts raised by each frame in turn."""
    out: list[list[tuple[str, str, str]]] = []
    for seq, dets in enumerate(frames):
        alerts = rb.evaluate(result(*dets, stream=stream, seq=seq), now=T0 + 100)
        out.append([(a.rule, a.label, a.state) for a in alerts])
    return out


def test_an_on_alert_carries_the_result_and_the_counted_detections() -> None:
    rb = book({"name": "people", "min_score": 0.5, "actions": ["log", "hook"]})
    counted = det(score=0.8)
    r = result(counted, det(score=0.3), det("car"), seq=4)
    (alert,) = [a for a in rb.evaluate(r, now=T0 + 99) if a.label == "person"]
    assert alert == Alert(
        sink="alerts",
        rule="people",
        stream="cam1",
        label="person",
        state="on",
        frame_id=r.frame_id,
        seq=4,
        capture_ts=r.capture_ts,
        raised_ts=T0 + 99,
        width=WIDTH,
        height=HEIGHT,
        detections=[counted],
        actions=["log", "hook"],
    )


def test_min_score_is_inclusive() -> None:
    rb = book({"name": "r", "min_score": 0.5})
    assert rb.evaluate(result(det(score=0.49)), now=T0) == []
    (alert,) = rb.evaluate(result(det(score=0.5), seq=1), now=T0)
    assert alert.state == "on" and [d.score for d in alert.detections] == [0.5]


def test_labels_filter_and_empty_labels_mean_every_label() -> None:
    people = book({"name": "r", "labels": ["person"]})
    assert people.evaluate(result(det("car")), now=T0) == []
    assert [a.label for a in people.evaluate(result(det("car"), det("person"), seq=1), now=T0)] == ["person"]
    anything = book({"name": "r"})
    assert sorted(a.label for a in anything.evaluate(result(det("car"), det("dog")), now=T0)) == ["car", "dog"]


def test_min_count_needs_that_many_detections_of_one_label() -> None:
    rb = book({"name": "crowd", "min_count": 2})
    assert rb.evaluate(result(det("person"), det("car")), now=T0) == []
    (alert,) = rb.evaluate(result(det("person"), det("person", 0.7), det("car"), seq=1), now=T0)
    assert alert.label == "person" and len(alert.detections) == 2


def test_zone_counts_box_centres_inside_the_polygon_in_relative_coordinates() -> None:
    rb = book({"name": "door", "zone": [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]})  # right half
    assert rb.evaluate(result(det(centre=(60, 50))), now=T0) == []  # x 0.3
    (alert,) = rb.evaluate(result(det(centre=(60, 50)), det(centre=(160, 20)), seq=1), now=T0)  # x 0.8
    assert [d.box for d in alert.detections] == [(150, 15, 170, 25)]


def test_zone_may_be_concave() -> None:
    # A U shape: the notch between the arms (x 0.4-0.6, y below 0.6) is outside.
    u = [(0.1, 0.1), (0.4, 0.1), (0.4, 0.6), (0.6, 0.6), (0.6, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)]
    assert inside((0.2, 0.3), u) and inside((0.8, 0.3), u) and inside((0.5, 0.8), u)
    assert not inside((0.5, 0.3), u) and not inside((0.05, 0.5), u) and not inside((0.5, 0.95), u)
    rb = book({"name": "u", "zone": u})
    assert rb.evaluate(result(det(centre=(100, 30))), now=T0) == []  # (0.5, 0.3): in the notch
    assert len(rb.evaluate(result(det(centre=(100, 80)), seq=1), now=T0)) == 1  # (0.5, 0.8): the base


P = [det()]
NONE: list[Detection] = []


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        # k=2 of n=3: fires on the second hit within three frames, stops when fewer than two remain.
        ([P, NONE, P, NONE, P, P], [[], [], ["on"], ["off"], ["on"], []]),
        ([P, P, P, NONE, NONE, NONE], [[], ["on"], [], [], ["off"], []]),
        # Hits three frames apart never share a window of three.
        ([P, NONE, NONE, P, NONE, NONE, P], [[]] * 7),
    ],
)
def test_k_of_n_window(frames: list[list[Detection]], expected: list[list[str]]) -> None:
    rb = book({"name": "r", "k": 2, "n": 3})
    assert [[s for _, _, s in frame] for frame in states(rb, frames)] == expected


def test_off_is_raised_once() -> None:
    rb = book({"name": "r"})
    assert states(rb, [P, P, NONE, NONE, NONE, P]) == [
        [("r", "person", "on")],
        [],
        [("r", "person", "off")],
        [],
        [],
        [("r", "person", "on")],
    ]


def test_cooldown_suppresses_a_new_on_until_cooldown_s_after_the_last_by_capture_time() -> None:
    rb = book({"name": "r", "cooldown_s": 10})

    def at(ts: float, *dets: Detection) -> list[str]:
        # raised_ts far off: only capture_ts may decide the cooldown.
        return [a.state for a in rb.evaluate(result(*dets, ts=T0 + ts), now=T0 + 1000)]

    assert at(0, det()) == ["on"]
    assert at(1) == ["off"]  # off is never held back
    assert at(2, det()) == []  # holds, but only 2 s after the last on
    assert at(9.9, det()) == []  # still held back; no off either, since it never turned on
    assert at(9.95) == []
    assert at(10, det()) == ["on"]  # re-checked on every frame: allowed once 10 s have passed


def test_cooldown_is_per_stream_and_label() -> None:
    rb = book({"name": "r", "cooldown_s": 60})
    assert [a.label for a in rb.evaluate(result(det("person")), now=T0)] == ["person"]
    assert [a.label for a in rb.evaluate(result(det("person"), det("car"), seq=1), now=T0)] == ["car"]
    assert [(a.stream, a.state) for a in rb.evaluate(result(det("person"), stream="cam2", seq=2), now=T0)] == [
        ("cam2", "on")
    ]


def test_stream_patterns_select_the_streams_a_rule_watches() -> None:
    rb = book({"name": "doors", "streams": ["door-*", "gate"]})
    assert rb.evaluate(result(det(), stream="yard"), now=T0) == []
    assert rb.evaluate(result(det(), stream="door"), now=T0) == []
    assert [a.stream for a in rb.evaluate(result(det(), stream="door-1"), now=T0)] == ["door-1"]
    assert [a.stream for a in rb.evaluate(result(det(), stream="gate"), now=T0)] == ["gate"]


def test_streams_have_windows_of_their_own() -> None:
    rb = book({"name": "r", "k": 2, "n": 2})
    assert rb.evaluate(result(det(), stream="a"), now=T0) == []
    assert rb.evaluate(result(det(), stream="b"), now=T0) == []  # a's hit does not count for b
    assert [a.stream for a in rb.evaluate(result(det(), stream="a", seq=1), now=T0)] == ["a"]


def test_rules_and_labels_are_independent() -> None:
    rb = book(
        {"name": "people", "labels": ["person"]},
        {"name": "busy", "k": 2, "n": 2},
    )
    both = [det("person"), det("car")]
    assert states(rb, [both, both, [det("car")], [det("car")], NONE]) == [
        [("people", "person", "on")],
        [("busy", "person", "on"), ("busy", "car", "on")],
        [("people", "person", "off"), ("busy", "person", "off")],
        [],
        [("busy", "car", "off")],
    ]


def test_a_label_first_seen_later_starts_its_own_window() -> None:
    rb = book({"name": "r", "k": 2, "n": 3})
    assert states(rb, [[det("car")], [det("person")], [det("person")], NONE, NONE]) == [
        [],
        [],
        [("r", "person", "on")],  # the car's one hit never reaches k=2
        [],
        [("r", "person", "off")],
    ]
