"""Kills: a detector replica, and the Redis server (with and without persistence), SIGKILLed under load.

Every case ends with the ledger: each frame ingest pushed has exactly one result, or is counted stale or dead;
duplicates only as counted re-deliveries.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import Client, connect, text
from common.redis_io.settings import EmbeddedServerConfig
from common.wire import Frame, Result, decode
from tests.faults.conftest import Record
from tests.faults.stack import (
    added_since,
    camera,
    dropped,
    finished,
    jsonl_rows,
    ledger,
    pending_of,
    problems,
    processes,
    published,
    redeliveries,
    server_ms,
    still_pending,
    stored,
    totals,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "kill"
KEYS = Keys(PREFIX)
GROUP = KEYS.detector_group("main")
STREAMS = ["a", "b", "c", "d"]
FRAMES = [KEYS.frames(s) for s in STREAMS]


def stack_config(tmp_path: Path, fps: float) -> Path:
    cams = [camera(name, seed, fps) for seed, name in enumerate(STREAMS)]
    sink = {"kind": "jsonl", "name": "out", "path": str(tmp_path / "results.jsonl")}
    return write_config(tmp_path / "stack.yaml", PREFIX, cams, {"max_age_ms": None}, [sink])


def test_a_replica_killed_mid_batch_under_load_loses_no_frame(tmp_path: Path, record: Record) -> None:
    config = stack_config(tmp_path, fps=12)
    with EmbeddedServer(tmp_path / "r.sock") as server, processes(tmp_path, config, server.url) as procs:
        client = connect(server.url)
        procs.start("survivor", "detector", "--replica", "main-0", "--until-idle", "6")
        procs.start("victim", "detector", "--replica", "main-1")
        procs.start("sink", "sink", "--until-idle", "10")
        procs.start("ingest", "ingest", "--duration", "16")
        wait_for("the victim answering", lambda: answered_by(client).get("main-1", 0) > 20, 90)
        # Kill it the moment it holds a batch: read, not yet answered.
        wait_for(
            "the victim holding frames",
            lambda: any(pending_of(client, FRAMES, GROUP, "main-1").values()),
            30,
            every=0.005,
        )
        procs.kill("victim")
        held = pending_of(client, FRAMES, GROUP, "main-1")
        recovery_s = wait_for("its frames answered by the survivor", lambda: not still_pending(client, GROUP, held), 60)
        finished(procs, "ingest", "survivor", "sink")
        book = ledger(client, PREFIX, published(procs.log("ingest")))
        redelivered = redeliveries([procs.log("survivor")])
        by_replica = answered_by(client)
        client.close()

    assert book and all(v.pushed > 100 for v in book.values()), procs.tail("ingest")
    assert problems(book, redelivered) == []
    assert len(stored(tmp_path / "results.jsonl")) == totals(book)["answered"]  # the sink stored every result once
    held_count = sum(map(len, held.values()))
    assert held_count > 0 and by_replica["main-0"] > 20
    record(frames=totals(book), held_at_kill=held_count, redelivered=redelivered, recovery_s=round(recovery_s, 2),
           claim_idle_s=1.5, results_by_replica=by_replica)  # fmt: skip


def answered_by(client: Client) -> dict[str, int]:
    """Results published per replica, over every stream."""
    results: list[Any] = [client.xrange(KEYS.results(s)) for s in STREAMS]
    replicas = [decode(f[b"msg"], Result).replica for entries in results for _, f in entries]
    return dict(Counter(replicas))


def test_redis_killed_with_aof_loses_no_frame_and_every_service_reconnects(tmp_path: Path, record: Record) -> None:
    config = stack_config(tmp_path, fps=8)
    server = EmbeddedServer(tmp_path / "r.sock", EmbeddedServerConfig(data_dir=tmp_path / "aof"))
    with server, processes(tmp_path, config, server.url) as procs:
        procs.start("detector", "detector", "--replica", "main-0", "--until-idle", "8")
        procs.start("sink", "sink", "--until-idle", "12")
        procs.start("ingest", "ingest", "--duration", "16")
        wait_for("results stored", lambda: len(stored(tmp_path / "results.jsonl")) > 30, 90)
        server.kill()
        time.sleep(1.0)
        server.start()
        reconnect = reconnect_times(server.url, tmp_path)
        finished(procs, "ingest", "detector", "sink")
        client = connect(server.url)
        book = ledger(client, PREFIX, published(procs.log("ingest")))
        client.close()

    assert problems(book, redeliveries([procs.log("detector")])) == []
    assert len(stored(tmp_path / "results.jsonl")) == totals(book)["answered"]  # the sink stored every result once
    assert max(reconnect.values()) <= 5.0, reconnect
    record(frames=totals(book), reconnect_s=reconnect, dropped_by_ingest_while_down=dropped(procs.log("ingest")))


def reconnect_times(url: str, tmp_path: Path) -> dict[str, float]:
    """Seconds from the server's restart (now) until ingest pushed a frame, the detector published a result and
    the sink stored one of a frame pushed after the restart."""
    start, results = time.monotonic(), tmp_path / "results.jsonl"
    client = connect(url)
    since_ms = server_ms(client) // 1000 * 1000  # whole seconds, as before: ids of this second count as after
    checks = {
        "ingest": lambda: any(added_since(client, KEYS.frames(s), since_ms) for s in STREAMS),
        "detector": lambda: any(added_since(client, KEYS.results(s), since_ms) for s in STREAMS),
        "sink": lambda: any(int(row["frame_id"].split("-")[0]) >= since_ms for row in jsonl_rows(results)),
    }
    out = {}
    for name, check in checks.items():
        wait_for(f"{name} working again", check, 30)
        out[name] = time.monotonic() - start
    client.close()
    return {k: round(v, 2) for k, v in out.items()}


def unread(client: Client, key: str, group: str) -> list[bytes]:
    """Payloads of the entries of ``key`` that ``group`` has not been given yet (after its last-delivered id)."""
    groups = {text(g["name"]): g for g in client.xinfo_groups(key)} if client.exists(key) else {}
    if group not in groups:
        return [f[b"msg"] for _, f in client.xrange(key)]
    last = text(groups[group]["last-delivered-id"])
    return [f[b"msg"] for _, f in client.xrange(key, f"({last}", "+")]


def test_redis_killed_without_persistence_loses_exactly_the_counted_backlog(tmp_path: Path, record: Record) -> None:
    config = stack_config(tmp_path, fps=8)
    server = EmbeddedServer(tmp_path / "r.sock")
    with server, processes(tmp_path, config, server.url) as procs:
        procs.start("detector", "detector", "--replica", "main-0", "--until-idle", "8")
        procs.start("sink", "sink", "--until-idle", "12")
        procs.start("ingest", "ingest", "--duration", "16")
        wait_for("results stored", lambda: len(stored(tmp_path / "results.jsonl")) > 30, 90)
        # Freeze every client so the backlog can be counted as the kill finds it; what a client holds (read, not
        # acked) it finishes after the restart, so only what nobody was given yet is lost.
        for proc in procs.running.values():
            os.kill(proc.pid, signal.SIGSTOP)
        client = connect(server.url)
        backlog = {(decode(p, Frame).stream, decode(p, Frame).seq) for s in STREAMS
                   for p in unread(client, KEYS.frames(s), GROUP)}  # fmt: skip
        backlog |= {(decode(p, Result).stream, decode(p, Result).seq) for s in STREAMS
                    for p in unread(client, KEYS.results(s), KEYS.sink_group("out"))}  # fmt: skip
        client.close()
        server.kill()
        server.start()
        for proc in procs.running.values():
            os.kill(proc.pid, signal.SIGCONT)
        reconnect = reconnect_times(server.url, tmp_path)
        finished(procs, "ingest", "detector", "sink")
        client = connect(server.url)
        groups = {
            "frames": {text(g["name"]) for s in STREAMS for g in client.xinfo_groups(KEYS.frames(s))},
            "results": {text(g["name"]) for s in STREAMS for g in client.xinfo_groups(KEYS.results(s))},
        }
        client.close()

    pushed = published(procs.log("ingest"))
    lost = {(s, i) for s, n in pushed.items() for i in range(n)} - stored(tmp_path / "results.jsonl")
    assert lost == backlog, f"lost but not in the backlog: {sorted(lost - backlog)[:10]}"
    assert groups == {"frames": {GROUP}, "results": {KEYS.sink_group("out")}}
    assert max(reconnect.values()) <= 5.0, reconnect
    record(pushed=sum(pushed.values()), backlog_at_kill=len(backlog), lost=len(lost), reconnect_s=reconnect,
           dropped_by_ingest_while_down=dropped(procs.log("ingest")))  # fmt: skip
