"""Store and alert sinks reading a tracker's events, as real processes on a real embedded server: events stored once
each (SQLite, JSONL, PostgreSQL where one runs) and alerts raised once per event through a redelivery and a
republished event; the snapshot of an event's best frame; the query's command line on what was stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import Client, connect
from common.wire import FIELD, Alert, BestShot, Event, Frame, encode
from sink.stores import events
from tests.conftest import ROOT
from tests.e2e.test_sinks import finish, sink
from tests.servers.webhook import Hook
from tests.unit.test_event_stores import BEST_BOX, EVENTS, T0

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "evsinks"


def push_best_frame(client: Client) -> str:
    """A real JPEG frame of cam1 on its frames stream: the best frame of cam1's objects; returns its id."""
    image = np.full((270, 480, 3), 90, np.uint8)
    frame = Frame(stream="cam1", seq=0, capture_ts=T0, width=1920, height=1080, encoding="jpeg", image_width=480,
                  image_height=270, data=cv2.imencode(".jpg", image)[1].tobytes())  # fmt: skip
    frame_id: str = client.xadd(Keys(PREFIX).frames("cam1"), {FIELD: encode(frame)}).decode()
    return frame_id


def with_best_frame(event: Event, frame_id: str) -> Event:
    best = BestShot(frame_id=frame_id, seq=0, capture_ts=T0, score=0.9, box=BEST_BOX)
    return event.model_copy(update={"best": best})


def write_config(tmp: Path, hook_url: str, pg_url: str | None) -> Path:
    quick = {"block_ms": 300, "events_of": "trk"}
    sinks: list[dict[str, object]] = [
        {"kind": "tracker", "name": "trk"},  # not run here: the test publishes its events
        {"kind": "sqlite", "name": "db", "path": "events.db", **quick},
        {"kind": "jsonl", "name": "lines", "path": "events.jsonl", **quick},
    ]
    if pg_url:
        sinks.append({"kind": "postgres", "name": "pg", "url": pg_url, **quick})
    actions = {"hook": {"kind": "webhook", "url": hook_url, "timeout_s": 1}, "shot": {"kind": "snapshot",
               "folder": "snapshots"}}  # fmt: skip
    rules = [
        {"name": "entered", "changes": ["zone_enter"], "zones": ["door"], "actions": ["hook", "shot"]},
        {"name": "cam2-start", "streams": ["cam2"], "events": ["start"], "actions": ["hook", "shot"]},
    ]
    sinks.append({"kind": "alert", "name": "watch", "rules": rules, "actions": actions, "retry_initial_s": 0.2,
                  "retry_max_s": 1, **quick})  # fmt: skip
    path = tmp / "stack.yaml"
    path.write_text(yaml.safe_dump({"streams": {"prefix": PREFIX}, "sinks": sinks}, sort_keys=False))
    return path


def test_events_are_stored_and_alerted_once_each_through_a_redelivery(tmp_path: Path, pg_url: str | None) -> None:
    hook = Hook().start()
    config = write_config(tmp_path, hook.url, pg_url)
    names = ["db", "lines", "watch"] + (["pg"] if pg_url else [])
    keys = Keys(PREFIX)
    with EmbeddedServer(tmp_path / "v.sock") as server:
        client = connect(server.url)
        best = push_best_frame(client)
        # cam1's objects have their best frame on the frames stream; cam2's person (EVENTS[3]) has one long trimmed.
        published = [with_best_frame(e, best) if e.stream == "cam1" else e for e in EVENTS]
        entries = 0
        for e in [*published, published[1]]:  # the zone_enter twice: a tracker republishing it after a restart
            client.xadd(keys.events("trk", e.stream), {FIELD: encode(e)})
            entries += 1
        client.xadd(keys.events("trk", "cam1"), {FIELD: b"\x00 not msgpack"})
        client.xadd(keys.events("trk", "cam2"), {FIELD: encode(Frame.model_validate(
            {"stream": "cam2", "seq": 0, "capture_ts": T0, "width": 8, "height": 8, "encoding": "bgr8",
             "image_width": 1, "image_height": 1, "data": b"\x00\x00\x00"}))})  # fmt: skip
        entries += 2
        logs: dict[str, dict[str, str]] = {}
        for attempt in ("first", "redelivered"):
            procs = {n: sink(config, server.url, n, "--max-frames", str(entries)) for n in names}
            logs[attempt] = {n: finish(p) for n, p in procs.items()}
            assert "Traceback" not in "".join(logs[attempt].values()), logs[attempt]
            if attempt == "first":
                for n in names:  # every entry again, as after a crash before the acks: at-least-once delivery
                    for stream in ("cam1", "cam2"):
                        client.xgroup_setid(keys.events("trk", stream), keys.sink_group(n), "0")
        # Stores: each event once, whole.
        stored = sorted(events(tmp_path / "events.db"), key=lambda e: e.event_id)
        assert stored == sorted(published, key=lambda e: e.event_id)
        assert "stored 7 new events" in logs["first"]["db"] and "stored 0 new events" in logs["redelivered"]["db"]
        lines = [
            Event.model_validate(json.loads(line)) for line in (tmp_path / "events.jsonl").read_text().splitlines()
        ]
        assert sorted(lines, key=lambda e: e.event_id) == stored
        if pg_url:
            assert sorted(events(pg_url), key=lambda e: e.event_id) == stored
        # Alerts: one per matching event, however often it came; each showing the object at its best.
        raised = sorted((Alert.model_validate(b) for b in hook.bodies), key=lambda a: a.rule)
        assert [(a.rule, a.stream, a.state, a.frame_id) for a in raised] == [
            ("cam2-start", "cam2", "on", published[3].best.frame_id),
            ("entered", "cam1", "on", best),
        ]
        assert client.xlen(keys.alerts("watch")) == 2
        shots = list((tmp_path / "snapshots" / "cam1").glob("*.jpg"))
        assert len(shots) == 1 and best in shots[0].name and "_entered_" in shots[0].name
        assert cv2.imread(str(shots[0])).shape == (270, 480, 3)
        assert not (tmp_path / "snapshots" / "cam2").exists()
        # Dead letters: the two unreadable entries, by each sink, each attempt; the snapshot of a trimmed frame, once.
        reasons = [f[b"reason"].decode() for _, f in client.xrange(keys.dead_letters())]
        unreadable = [r for r in reasons if r.startswith("WireError: ")]
        assert len(unreadable) == 2 * len(names) * 2, reasons
        assert any("message type is 'frame', expected 'event'" in r for r in unreadable)
        (trimmed,) = [r for r in reasons if not r.startswith("WireError: ")]
        assert trimmed.startswith("action shot: snapshot 'shot': ") and published[3].best.frame_id in trimmed
        assert "of stream 'cam2' is no longer in the frames stream (trimmed" in trimmed
        for n in names:
            for stream in ("cam1", "cam2"):
                assert client.xpending(keys.events("trk", stream), keys.sink_group(n))["pending"] == 0
        client.close()
    hook.stop()
    # The query's command line, on the config: a person's events about or in the door zone.
    query = subprocess.run(
        [sys.executable, "-m", "sink.stores", "query", "--config", str(config), "--sink", "db", "--label", "person",
         "--zone", "door", "--since", str(T0), "--until", str(T0 + 60)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert query.returncode == 0, query.stderr
    printed = [json.loads(line)["event_id"] for line in query.stdout.splitlines()]
    assert printed == [published[i].event_id for i in (1, 3, 4, 5)]
