"""A tracker replica killed mid-run (SIGKILL): its cameras move to the other replica within seconds, every camera
keeps being tracked (every result answered once, in order), no event is lost or published twice, and the track ids
continue where the dead replica left them."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.wire import Event, Tracks
from tests.e2e.test_tracker import DEMO_POOL, check_events_and_counts, read_all, tracker_sink
from tests.faults.conftest import Record
from tests.faults.stack import camera, processes, wait_for, write_config

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(420)]

PREFIX = "tkill"
CAMERAS = ("c0", "c1", "c2", "c3")
FRAMES = 150  # per camera, at 10 fps: 15 s
LEASE_S = 2.0


def held(log: str) -> set[str]:
    return set(re.findall(r"tracking camera (\S+) ", log))


def test_a_killed_tracker_replicas_cameras_move_and_nothing_is_lost_or_doubled(tmp_path: Path, record: Record) -> None:
    cams = [camera(n, 60 + i, 10, shapes=3) for i, n in enumerate(CAMERAS)]
    sink = tracker_sink(lease_s=LEASE_S, claim_idle_ms=2000)
    config = write_config(tmp_path / "stack.yaml", PREFIX, cams, DEMO_POOL, [sink])
    keys = Keys(PREFIX)
    with EmbeddedServer(tmp_path / "v.sock") as server, processes(tmp_path, config, server.url) as procs:
        procs.start("detector", "detector", "--replica", "d", "--until-idle", "8")
        for t in ("t1", "t2"):
            procs.start(t, "sink", "--sink", "objects", "--consumer", t, "--until-idle", "10")
        wait_for("the detector ready", lambda: "reading" in procs.log("detector"), 120)
        procs.start("ingest", "ingest", "--max-frames", str(FRAMES))
        # Both replicas take their share (2 cameras each) as the cameras appear.
        wait_for("the cameras split", lambda: len(held(procs.log("t1"))) == 2 and len(held(procs.log("t2"))) == 2, 60)
        client = redis.Redis(unix_socket_path=str(tmp_path / "v.sock"))
        victim = sorted(held(procs.log("t1")))
        wait_for("the victim's cameras tracked a while",
                 lambda: all(client.xlen(keys.tracks("objects", c)) >= 30 for c in victim), 60)  # fmt: skip
        before = {c: read_all(client, keys.tracks("objects", c), Tracks) for c in victim}
        procs.kill("t1")
        killed = time.monotonic()
        moved = wait_for("the victim's cameras moved", lambda: held(procs.log("t2")) >= set(CAMERAS), 30)
        for name in ("ingest", "detector", "t2"):
            assert procs.wait(name, 240) == 0, procs.tail(name)
        tracks = {c: read_all(client, keys.tracks("objects", c), Tracks) for c in CAMERAS}
        events = {c: read_all(client, keys.events("objects", c), Event) for c in CAMERAS}
        counts = {c: {k.decode(): int(v) for k, v in client.hgetall(keys.counts("objects", c)).items()}
                  for c in CAMERAS}  # fmt: skip
        pending = {c: client.xpending(keys.results(c), keys.sink_group("objects"))["pending"] for c in CAMERAS}
        client.close()

    late = sum(int(n) for n in re.findall(r"'late': (\d+)", procs.log("t2")))
    record(moved_s=round(moved, 2), killed_after_s=round(time.monotonic() - killed, 1), late=late,
           tracks={c: len(t) for c, t in tracks.items()}, events={c: len(e) for c, e in events.items()})  # fmt: skip
    assert moved <= 3 * LEASE_S, "the cameras move within seconds of the kill"
    for c in CAMERAS:
        seqs = [t.seq for t in tracks[c]]
        assert seqs == list(range(FRAMES)), f"{c}: every result tracked exactly once, in order"
        assert pending[c] == 0, c
        check_events_and_counts(events[c], counts[c], {"left"})  # no event lost or published twice
    for c in victim:  # the new owner continued the dead one's tracks: the ids alive at the kill go on after it
        last_before = before[c][-1]
        after = [t for t in tracks[c] if t.seq > last_before.seq]
        alive = {o.track_id for o in last_before.objects}
        continued = alive & {o.track_id for t in after[:10] for o in t.objects}
        assert alive and continued, (c, alive, [sorted(o.track_id for o in t.objects) for t in after[:10]])
        starts: dict[int, int] = defaultdict(int)
        for e in events[c]:
            starts[e.track_id] += e.event == "start"
        assert all(n == 1 for n in starts.values()), f"{c}: a track started twice"
