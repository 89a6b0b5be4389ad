"""Alert sinks reading a tracker's events: which events a rule matches, the alert each raises (once, through
redeliveries, on a real server), the config's checks, and the snapshot of an event's best frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest
import redis
from pydantic import ValidationError

from common.keys import Keys
from common.redis_io import Unavailable, group_reader
from common.wire import FIELD, Alert, Detection, Event, Frame, decode, encode
from sink.alerts import AlertSinkConfig
from sink.alerts.actions import DeliveryError
from sink.alerts.actions.snapshot import SnapshotAction, SnapshotActionConfig
from sink.alerts.raising import Raiser
from sink.alerts.rules import EventRules
from sink.draw import BOX_COLOUR
from tests.unit.test_event_stores import BEST_BOX, E1, E2, E3, E4, E5, E6, E7, EVENTS, T0, event

NOW = T0 + 100


def sink_cfg(*rules: dict[str, Any], events_of: str | None = "trk", **extra: Any) -> AlertSinkConfig:
    return AlertSinkConfig.model_validate({
        "name": "watch", "events_of": events_of, "rules": [{"actions": ["say"]} | r for r in rules],
        "actions": {"say": {"kind": "log"}, "shot": {"kind": "snapshot", "folder": "shots"}}, **extra,
    })  # fmt: skip


def matched(rule: dict[str, Any], events: list[Event] = EVENTS) -> list[Event]:
    """The events that raise an alert under ``rule``."""
    rules = EventRules(sink_cfg({"name": "r"} | rule))
    return [e for e in events if rules.evaluate(e, NOW)]


# ---------------------------------------------------------------------------------------------------- matching
def test_an_event_raises_one_on_alert_showing_the_object_at_its_best() -> None:
    rules = EventRules(sink_cfg({"name": "entered", "changes": ["zone_enter"], "actions": ["say", "shot"]}))
    assert rules.evaluate(E1, NOW) == []
    (alert,) = rules.evaluate(E2, NOW)
    assert alert == Alert(
        sink="watch",
        rule="entered",
        stream="cam1",
        label="person",
        state="on",
        frame_id=E2.best.frame_id,
        seq=E2.best.seq,
        capture_ts=E2.best.capture_ts,
        raised_ts=NOW,
        width=1920,
        height=1080,
        detections=[Detection(label="person", class_id=0, score=0.9, box=BEST_BOX)],
        actions=["say", "shot"],
        event_id=E2.event_id,
    )
    assert EventRules.mark(E2) == E2.event_id


def test_every_event_matches_a_rule_without_conditions() -> None:
    assert matched({}) == EVENTS


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"events": ["start"]}, [E1, E3, E4]),
        ({"events": ["start", "end"], "labels": ["person"]}, [E1, E4, E7]),
        ({"changes": ["zone_enter", "zone_leave"]}, [E2, E6]),
        ({"events": ["update"], "changes": ["line_cross"]}, [E5]),
        ({"zones": ["door"]}, [E2, E4, E5, E6]),  # about the zone (entered, left), or the object in it
        ({"zones": ["door"], "streams": ["cam1"]}, [E2, E5, E6]),
        ({"zones": ["lot", "yard"]}, [E3]),
        ({"lines": ["gate"]}, [E5]),
        ({"lines": ["gate"], "directions": ["out"]}, []),
        ({"directions": ["in"]}, [E5]),
        ({"labels": ["car"]}, [E3]),
    ],
)
def test_conditions(rule: dict[str, Any], expected: list[Event]) -> None:
    assert matched(rule) == expected


def test_min_score_is_the_objects_best_score() -> None:
    weak, strong = event(best_score=0.49), event(n=1, best_score=0.5)  # both score 0.625 in their own frame
    assert matched({"min_score": 0.5}, [weak, strong]) == [strong]


def test_each_matching_rule_raises_its_own_alert() -> None:
    rules = EventRules(sink_cfg({"name": "in-door", "zones": ["door"]}, {"name": "people", "labels": ["person"]}))
    assert [a.rule for a in rules.evaluate(E2, NOW)] == ["in-door", "people"]
    assert [a.rule for a in rules.evaluate(E3, NOW)] == []


# ---------------------------------------------------------------------------------------------------- config
def config_error(*rules: dict[str, Any], events_of: str | None) -> str:
    with pytest.raises(ValidationError) as info:
        sink_cfg(*rules, events_of=events_of)
    return str(info.value)


def test_an_events_rule_in_a_results_sink_is_refused() -> None:
    message = config_error({"name": "ok"}, {"name": "door", "zones": ["door"], "events": []}, events_of=None)
    assert (
        "rules[1] (door): events, zones match a tracker's events, but this sink reads the results: set events_of"
        in (message)
    )


def test_a_frame_window_rule_in_an_events_sink_is_refused() -> None:
    message = config_error({"name": "door", "k": 2, "n": 3, "cooldown_s": 0}, events_of="trk")
    assert (
        "rules[0] (door): cooldown_s, k, n belong to rules over the results (frames in a window), but this sink "
        in (message)
    )
    assert "reads the events of tracker trk (events_of)" in message


def test_changes_need_update_events() -> None:
    message = config_error({"name": "r", "events": ["start"], "changes": ["loiter"]}, events_of="trk")
    assert "changes ['loiter'] come with update events only" in message


def test_a_results_sink_keeps_its_frame_window_rules() -> None:
    cfg = sink_cfg({"name": "door", "k": 2, "n": 3, "zone": [(0, 0), (1, 0), (1, 1)]}, events_of=None)
    assert cfg.events_of is None and cfg.rules[0].k == 2


# ---------------------------------------------------------------------------------------------------- raising
def test_events_alert_once_through_redeliveries_and_republishing(client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    cfg = sink_cfg({"name": "door", "zones": ["door"]}, block_ms=50)
    key = keys.events("trk", "cam1")
    for e in (E1, E2, E2):  # E2 twice: a tracker that republished it after a restart
        client.xadd(key, {FIELD: encode(e)})
    client.xadd(key, {FIELD: b"\x00 not msgpack"})
    reader = group_reader(client, keys, "events", keys.sink_group("watch"), "c1", cfg, 100, 1000, tracker="trk")
    raiser = Raiser(EventRules(cfg), reader, keys, cfg)

    def raise_what_is_read() -> None:
        for _ in range(5):  # the first reads discover the stream, then find the pending entries
            if entries := reader.read(block_ms=50):
                raiser.handle(entries)
                return
        raise AssertionError("nothing read")

    def alerts() -> list[Alert]:
        return [decode(cast(bytes, f[FIELD.encode()]), Alert) for _, f in client.xrange(keys.alerts("watch"))]

    raise_what_is_read()
    assert [a.frame_id for a in alerts()] == [E2.best.frame_id]
    assert raiser.counts == {"events": 2, "alerts": 1, "again": 1, "dead": 1}
    (dead,) = client.xrange(keys.dead_letters())
    assert dead[1][b"reason"].decode().startswith("WireError: ")
    client.xgroup_setid(key, keys.sink_group("watch"), "0")  # every entry again: a crash before the acks
    client.xadd(key, {FIELD: encode(E5)})
    raise_what_is_read()
    assert [a.frame_id for a in alerts()] == [E2.best.frame_id, E5.best.frame_id]
    assert raiser.counts["again"] == 1 + 3
    assert client.zscore(keys.alerted("watch"), E2.event_id) is not None


# ---------------------------------------------------------------------------------------------------- snapshot
GREY = 128


class Frames:
    def __init__(self, frame: Frame | None = None, error: Exception | None = None) -> None:
        self.frame, self.error = frame, error
        self.asked: list[tuple[str, str]] = []

    def __call__(self, stream: str, frame_id: str) -> Frame | None:
        self.asked.append((stream, frame_id))
        if self.error is not None:
            raise self.error
        return self.frame


def best_frame() -> Frame:
    """The best frame of the events above: 1920x1080, carried as a 480x270 grey JPEG."""
    image = np.full((270, 480, 3), GREY, np.uint8)
    return Frame(stream="cam1", seq=0, capture_ts=T0, width=1920, height=1080, encoding="jpeg", image_width=480,
                 image_height=270, data=cv2.imencode(".jpg", image)[1].tobytes())  # fmt: skip


def snapshot(folder: Path, frames: Frames) -> SnapshotAction:
    return SnapshotAction("shot", SnapshotActionConfig(folder=folder, quality=95), frames)


def test_snapshot_of_an_event_is_its_best_frame_with_its_box(tmp_path: Path) -> None:
    frames = Frames(best_frame())
    action = snapshot(tmp_path, frames)
    (alert,) = EventRules(sink_cfg({"name": "entered", "changes": ["zone_enter"]})).evaluate(E2, NOW)
    action.deliver(alert)
    assert frames.asked == [("cam1", E2.best.frame_id)]  # the best frame, not the frame of the event
    assert action.last_path is not None and action.last_path.parent == tmp_path / "cam1"
    assert action.last_path.name.startswith(f"{round(T0 * 1000)}_entered_{E2.best.frame_id}")  # and the event's id
    image = cv2.imread(str(action.last_path))
    # The best box (11, 21)-(111, 221) of the 1920x1080 frame is about (2.75, 5.25)-(27.75, 55.25) in 480x270.
    assert np.abs(image[40, 3].astype(int) - BOX_COLOUR).max() <= 40  # its left edge
    assert np.abs(image[40, 15].astype(int) - GREY).max() <= 40  # inside, untouched
    assert np.abs(image[200, 300].astype(int) - GREY).max() <= 40  # elsewhere, untouched


def test_snapshots_of_events_sharing_a_best_frame_are_apart_when_the_alert_names_its_event(tmp_path: Path) -> None:
    action = snapshot(tmp_path, Frames(best_frame()))
    paths = []
    for e in (E1, E7):  # one object's start and end: one best frame
        (alert,) = EventRules(sink_cfg({"name": "seen"})).evaluate(e, NOW)
        action.deliver(alert.model_copy(update={"event_id": e.event_id}))
        paths.append(action.last_path)
    assert [p.name for p in paths if p is not None] == [
        f"{round(T0 * 1000)}_seen_{E1.best.frame_id}_trk_cam1_1_0.jpg",
        f"{round(T0 * 1000)}_seen_{E1.best.frame_id}_trk_cam1_1_4.jpg",
    ]


def test_snapshot_of_a_trimmed_best_frame_says_so_and_is_not_retried(tmp_path: Path) -> None:
    (alert,) = EventRules(sink_cfg({"name": "seen"})).evaluate(E4, NOW)
    with pytest.raises(DeliveryError) as err:
        snapshot(tmp_path, Frames(None)).deliver(alert.model_copy(update={"event_id": E4.event_id}))
    assert err.value.transient is False
    assert str(err.value).startswith(
        f"snapshot 'shot': the best frame {E4.best.frame_id} of event {E4.event_id} of stream 'cam2' is no longer in "
        f"the frames stream (trimmed"
    )
    assert not any(tmp_path.iterdir())


def test_snapshot_while_redis_is_down_is_retried_later(tmp_path: Path) -> None:
    (alert,) = EventRules(sink_cfg({"name": "seen"})).evaluate(E3, NOW)
    with pytest.raises(DeliveryError, match="cannot read the frame: connection refused") as err:
        snapshot(tmp_path, Frames(error=Unavailable("connection refused"))).deliver(alert)
    assert err.value.transient is True
