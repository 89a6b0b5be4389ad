"""A recording read unpaced (here a synthetic camera with realtime false, as a file or an image folder would be)
goes as fast as the detectors take it: with no detector yet it fills its stream to the cap and waits, then it stays
at most ingest.max_lag frames ahead of the pool; none of its frames is trimmed unread or dropped as stale, though
most wait far longer than the pool's max_age."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from common.embedded import EmbeddedServer, EmbeddedServerConfig
from common.keys import Keys
from common.redis_io import connect
from tests.faults.stack import (
    camera,
    dropped,
    finished,
    jsonl_rows,
    processes,
    published,
    redeliveries,
    stored,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "rec"
STREAMS = ("a", "b")
FRAMES = 150  # per camera
CAP = 40
MAX_LAG = 12
MAX_AGE_MS = 300


def test_a_recording_waits_for_the_detectors_and_loses_no_frame(tmp_path: Path) -> None:
    cams = [camera(name, seed, 25, realtime=False) for seed, name in enumerate(STREAMS)]
    sink = {"kind": "jsonl", "name": "out", "path": str(tmp_path / "results.jsonl")}
    config = write_config(
        tmp_path / "stack.yaml", PREFIX, cams, {"max_age_ms": MAX_AGE_MS}, [sink],
        streams={"frames_maxlen": CAP}, ingest={"max_lag": MAX_LAG},
    )  # fmt: skip
    keys = Keys(PREFIX)
    lags: dict[str, list[int]] = {s: [] for s in STREAMS}
    with EmbeddedServer(tmp_path / "r.sock") as server, processes(tmp_path, config, server.url) as procs:
        client = connect(server.url)
        procs.start("ingest", "ingest", "--max-frames", str(FRAMES))
        # No pool reads yet: each stream fills to its cap and the recording waits there, saying why.
        wait_for("both recordings waiting", lambda: procs.log("ingest").count("no detector pool reads") == 2, 60)
        time.sleep(10 * MAX_AGE_MS / 1000)  # the waiting frames get older than 10 x max_age before a detector starts
        assert [client.xlen(keys.frames(s)) for s in STREAMS] == [CAP, CAP], procs.tail("ingest")
        procs.start("detector", "detector", "--replica", "main-0", "--until-idle", "5")
        procs.start("sink", "sink", "--until-idle", "8")
        while procs.running["ingest"].poll() is None:
            for s in STREAMS:
                groups: Any = client.xinfo_groups(keys.frames(s))
                lags[s] += [int(g["lag"]) for g in groups if g["lag"] is not None]
            time.sleep(0.05)
        for name in ("ingest", "detector", "sink"):
            assert procs.wait(name, 120) == 0, procs.tail(name)
        stale: Any = client.hgetall(keys.tallies("stale", keys.detector_group("main"))[0])
        dead = client.xlen(keys.dead_letters())
        client.close()

    assert published(procs.log("ingest")) == dict.fromkeys(STREAMS, FRAMES)
    assert re.findall(r"dropped (\d+)", procs.log("ingest"))[-2:] == ["0", "0"]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    for s in STREAMS:  # every frame answered once, in order: nothing trimmed unread, nothing stale
        assert [r["seq"] for r in rows if r["stream"] == s] == list(range(FRAMES)), s
    assert stale == {} and dead == 0
    read = int(re.findall(r"ReaderStats\(read=(\d+)", procs.log("detector"))[-1])
    assert read == len(STREAMS) * FRAMES
    # The frames that waited for the detector to start were far older than max_age, and still answered.
    assert max(r["timings"]["queue_ms"] for r in rows) > 10 * MAX_AGE_MS
    # Once the pool caught up with a stream's first backlog, its recording never ran more than max_lag ahead of it.
    for s, seen in lags.items():
        caught_up = next(i for i, lag in enumerate(seen) if lag <= MAX_LAG)
        assert max(seen[caught_up:]) <= MAX_LAG, (s, seen)


def test_a_recording_waits_while_redis_is_away_and_loses_no_frame(tmp_path: Path) -> None:
    frames = 400
    results = tmp_path / "results.jsonl"
    sink = {"kind": "jsonl", "name": "out", "path": str(results)}
    config = write_config(
        tmp_path / "stack.yaml", PREFIX, [camera("a", 3, 25, realtime=False)], {"max_age_ms": MAX_AGE_MS}, [sink],
        streams={"frames_maxlen": CAP}, ingest={"max_lag": MAX_LAG},
    )  # fmt: skip
    server = EmbeddedServer(tmp_path / "r.sock", EmbeddedServerConfig(data_dir=tmp_path / "aof"))
    with server, processes(tmp_path, config, server.url) as procs:
        procs.start("detector", "detector", "--replica", "main-0", "--until-idle", "8")
        procs.start("sink", "sink", "--until-idle", "12")
        wait_for("the detector ready", lambda: "reading" in procs.log("detector"), 120)
        procs.start("ingest", "ingest", "--max-frames", str(frames))
        wait_for("results stored", lambda: len(stored(results)) > 60, 60)
        server.kill()
        time.sleep(6.0)  # longer than the clients' own retries: every service sees the outage
        server.start()
        finished(procs, "ingest", "detector", "sink")

    assert published(procs.log("ingest")) == {"a": frames} and dropped(procs.log("ingest")) == 0
    rows = jsonl_rows(results)
    assert stored(results) == {("a", seq) for seq in range(frames)}
    assert len(rows) - frames <= redeliveries([procs.log("detector")])  # twice only as a counted re-delivery
