"""Overload: frames pushed at three times what the detector can infer or more, for two minutes.

Redis memory must level off at the stream caps, the frames too old to be worth a result are counted as stale,
and the frames that do get a result keep a bounded latency (about the pool's max_age, not a growing queue).
The ledger: every frame pushed is answered once or counted stale (or dead), nothing else.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import connect
from tests.faults.conftest import Record
from tests.faults.stack import TINY, camera, processes, published, wait_for, write_config

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

PREFIX = "over"
STREAMS = ["a", "b", "c", "d"]
MAX_AGE_MS = 2000
# The tiny model at 608 px infers about 10 frames/s on a 2-core host; 4 cameras at 25 fps push 100. The overload comes
# from a slow detector rather than a fast ingest, so it holds on a busy host (with 128 px and ingest at 360 fps it fell
# to 2.9x in one CI run).
INPUT_SIZE = 608
CAMERA_FPS = 25
FRAMES_CAP = 300
RESULTS_CAP = 2000
DURATION_S = 120


def test_three_times_capacity_for_two_minutes_levels_off_counts_stale_and_bounds_latency(
    tmp_path: Path, record: Record
) -> None:
    cams = [camera(name, seed, CAMERA_FPS) for seed, name in enumerate(STREAMS)]
    sink = {"kind": "jsonl", "name": "out", "path": str(tmp_path / "results.jsonl")}
    # Small batches keep the wait behind the batch in flight short (about 0.2 s each here).
    pool = {"max_age_ms": MAX_AGE_MS, "max_batch": 2, "model": {**TINY, "input_size": INPUT_SIZE}}
    config = write_config(
        tmp_path / "stack.yaml", PREFIX, cams, pool, [sink],
        streams={"frames_maxlen": FRAMES_CAP, "results_maxlen": RESULTS_CAP},
    )  # fmt: skip
    keys = Keys(PREFIX)
    memory: list[tuple[float, int]] = []
    with EmbeddedServer(tmp_path / "r.sock") as server, processes(tmp_path, config, server.url) as procs:
        client = connect(server.url)
        procs.start("detector", "detector", "--replica", "main-0", "--until-idle", "10")
        procs.start("sink", "sink", "--until-idle", "15")
        wait_for("the detector ready", lambda: "reading" in procs.log("detector"), 120)
        procs.start("ingest", "ingest", "--duration", str(DURATION_S))
        start = time.monotonic()
        while procs.running["ingest"].poll() is None:
            info: Any = client.info("memory")
            memory.append((time.monotonic() - start, int(info["used_memory"])))
            time.sleep(1.0)
        for name in ("ingest", "detector", "sink"):
            assert procs.wait(name, 120) == 0, procs.tail(name)
        tally: Any = client.hgetall(keys.stale(keys.detector_group("main")))
        stale = sum(int(v) for v in tally.values())
        dead = client.xlen(keys.dead_letters())
        groups: list[Any] = [client.xinfo_groups(keys.frames(s)) for s in STREAMS]
        lengths = [client.xlen(keys.frames(s)) for s in STREAMS]
        client.close()

    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    answered = {(r["stream"], r["seq"]) for r in rows}
    pushed = sum(published(procs.log("ingest")).values())
    # The ledger: every frame pushed is answered once, stale or dead; nothing is left unread or pending.
    assert len(answered) == len(rows)
    assert pushed == len(answered) + stale + dead, (pushed, len(answered), stale, dead)
    assert all(g[0]["pending"] == 0 and g[0]["lag"] == 0 for g in groups), groups
    read = int(re.findall(r"ReaderStats\(read=(\d+)", procs.log("detector"))[-1])
    assert read == pushed, f"{pushed - read} frames were trimmed by the cap before anyone read them"

    # Three times capacity: the detector answered at most a third of what was pushed.
    load = pushed / len(answered)
    assert load >= 3.0, f"only {load:.1f}x capacity: raise the cameras' fps"

    # Memory levels off at the caps: the last third of the run needs no more than the middle third.
    middle = max(m for t, m in memory if DURATION_S / 3 <= t < 2 * DURATION_S / 3)
    last = max(m for t, m in memory if t >= 2 * DURATION_S / 3)
    assert last <= middle * 1.10, f"Redis memory still growing: {middle / 1e6:.1f} MB then {last / 1e6:.1f} MB"
    assert max(lengths) <= FRAMES_CAP + 100, lengths  # ~ trims whole nodes of 100 entries

    # Fresh frames keep a bounded latency: every answered frame was picked up within max_age, so it is answered
    # within that plus the batch ahead of it and its own.
    assert max(r["timings"]["queue_ms"] for r in rows) <= MAX_AGE_MS
    late = [r["timings"]["end_to_end_ms"] for r in rows if r["capture_ts"] - rows[0]["capture_ts"] > DURATION_S / 2]
    p50, p99 = statistics.median(late), statistics.quantiles(late, n=100)[98]
    assert p99 <= MAX_AGE_MS + 1500, f"p99 latency {p99:.0f} ms under overload"
    record(
        pushed=pushed, answered=len(answered), stale=stale, dead=dead, load=round(load, 1),
        answered_fps=round(len(answered) / DURATION_S, 1), pushed_fps=round(pushed / DURATION_S, 1),
        redis_mb_middle=round(middle / 1e6, 1), redis_mb_last=round(last / 1e6, 1),
        latency_ms_p50=round(p50), latency_ms_p99=round(p99), max_age_ms=MAX_AGE_MS,
        frames_stream_lengths=lengths,
    )  # fmt: skip
