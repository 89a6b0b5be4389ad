"""The whole stack on a real Valkey cluster (3 primaries, 3 replicas), a primary SIGKILLed mid-run.

Ingest, a detector and a sink run as processes against the cluster, the cameras spread over its shards. The primary
of the most cameras' shards is killed: its replica is promoted, every service carries on (within a bound), and the
ledger accounts for every frame: answered, stale, shed or dead, or lost with the primary (an entry the primary
acknowledged but had not yet sent to its replica: counted, and expected to be few, since the replica follows within
a millisecond or so here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from common.keys import Keys
from common.redis_io import connect
from common.redis_io.settings import RedisConfig
from common.wire import Result, decode
from tests.conftest import ROOT
from tests.faults.conftest import Record
from tests.faults.stack import (
    camera,
    dropped,
    finished,
    jsonl_rows,
    ledger,
    processes,
    published,
    redeliveries,
    stored,
    totals,
    wait_for,
    write_config,
)
from tests.servers.valkey_cluster import ValkeyCluster

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "clu"
SHARDS = 12
KEYS = Keys(PREFIX, SHARDS)
STREAMS = [f"cam{i}" for i in range(8)]


def test_a_primary_killed_mid_run_fails_over_and_the_ledger_accounts_for_every_frame(
    tmp_path: Path, record: Record
) -> None:
    cams = [camera(name, seed, fps=8) for seed, name in enumerate(STREAMS)]
    sink = {"kind": "jsonl", "name": "out", "path": str(tmp_path / "results.jsonl")}
    config = write_config(
        tmp_path / "stack.yaml", PREFIX, cams, {"max_age_ms": None}, [sink],
        streams={"shards": SHARDS}, redis_cfg={"cluster": True},
    )  # fmt: skip
    with ValkeyCluster(tmp_path / "cluster", node_timeout_ms=1000) as cluster:
        client = connect(cluster.url, RedisConfig(url=cluster.url, cluster=True, socket_timeout_s=5))
        by_primary = Counter(cluster.primary_of_key(KEYS.frames(s)).port for s in STREAMS)
        assert len(by_primary) >= 2, f"the cameras should span primaries: {by_primary}"
        with processes(tmp_path, config, cluster.url) as procs:
            procs.start("detector", "detector", "--replica", "main-0", "--until-idle", "10")
            procs.start("sink", "sink", "--until-idle", "12")
            procs.start("ingest", "ingest", "--duration", "20")
            wait_for("results stored", lambda: len(stored(tmp_path / "results.jsonl")) > 60, 120)
            port = by_primary.most_common(1)[0][0]
            victim = next(n for n in cluster.primaries() if n.port == port)
            on_victim = [s for s in STREAMS if cluster.primary_of_key(KEYS.frames(s)).port == port]
            killed = time.time()
            cluster.kill(victim)
            _, failover_s = cluster.wait_for_failover(victim, timeout=30)
            back_s = wait_for("a result for a camera of the killed primary", lambda: answered_since(client, on_victim,
                              killed), 60)  # fmt: skip
            finished(procs, "ingest", "detector", "sink", timeout=150)
            book = ledger(client, KEYS, published(procs.log("ingest")))
            redelivered = redeliveries([procs.log("detector")])
        client.close()

    assert book and all(v.pushed > 60 for v in book.values()), procs.tail("ingest")
    lost = {s: v.pushed - v.kept for s, v in book.items() if v.pushed != v.kept}
    assert all(s in on_victim for s in lost), f"frames lost on cameras of primaries never killed: {lost}"
    # Every frame still in the streams is accounted for; those missing are exactly those lost with the primary.
    missing = {s: v.missing for s, v in book.items() if v.missing}
    assert missing == lost, f"missing {missing}, lost with the primary {lost}\n{book}"
    assert sum(lost.values()) <= 20, f"{lost} lost with the primary: more than a replication window's worth"
    assert not [s for s, v in book.items() if v.pending or v.lag], book
    duplicates = sum(v.duplicates for v in book.values())
    assert duplicates <= redelivered, f"{duplicates} duplicate results, {redelivered} counted re-deliveries"
    assert len(stored(tmp_path / "results.jsonl")) == totals(book)["answered"]  # the sink stored every result once
    assert back_s <= 10, f"the killed primary's cameras were answered again only {back_s:.1f} s after the kill"
    record(frames=totals(book), lost_with_primary=sum(lost.values()), failover_s=round(failover_s, 2),
           answered_again_s=round(back_s, 2), redelivered=redelivered, dropped_by_ingest=dropped(procs.log("ingest")),
           cameras_on_killed_primary=len(on_victim))  # fmt: skip


def answered_since(client: Any, streams: list[str], since: float) -> bool:
    """A camera of ``streams`` has a result of a frame captured after ``since``."""
    for stream in streams:
        newest: Any = client.xrevrange(KEYS.results(stream), count=1)
        if newest and decode(newest[0][1][b"msg"], Result).capture_ts > since:
            return True
    return False


def test_the_launched_stack_with_tracker_and_alerts_runs_on_the_cluster(tmp_path: Path, record: Record) -> None:
    """``python -m common.stack.launcher`` on a cluster: every frame answered once, a tracker's tracks and an alert
    sink's alerts (their keys in slots of their own), then status and ``sink tail`` seeing every shard."""
    cams = [camera(name, seed, fps=8) for seed, name in enumerate(STREAMS[:4])]
    sinks: list[dict[str, Any]] = [
        {"kind": "jsonl", "name": "out", "path": str(tmp_path / "results.jsonl")},
        {"kind": "tracker", "name": "objects"},
        {"kind": "alert", "name": "watch", "rules": [{"name": "any", "min_score": 0.0, "actions": ["say"]}],
         "actions": {"say": {"kind": "log"}}},
    ]  # fmt: skip
    demo = {
        "model": {"folder": str(ROOT / "detector" / "models" / "shapes"), "input_size": 256},
        "max_batch": 8,
        "max_age_ms": None,
    }  # the bundled demo model: it finds the synthetic scene's shapes, so alerts fire
    config = write_config(tmp_path / "stack.yaml", PREFIX, cams, demo, sinks, streams={"shards": SHARDS},
                          redis_cfg={"cluster": True})  # fmt: skip
    with ValkeyCluster(tmp_path / "cluster", node_timeout_ms=1000) as cluster:
        env = {**os.environ, "REDIS_URL": cluster.url, "PYTHONUNBUFFERED": "1"}

        def run(*argv: str, timeout: float) -> str:
            done = subprocess.run([sys.executable, "-m", *argv, "--config", str(config)], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
            assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
            return done.stdout + done.stderr

        output = run("common.stack.launcher", "--duration", "8", "--drain", "90", timeout=240)
        status = run("common.stack.status", "--once", "--interval", "0.2", timeout=60)
        tail = run("sink", "tail", "--from-start", "--count", "5", "--json", timeout=60)
        client = connect(cluster.url, RedisConfig(url=cluster.url, cluster=True, socket_timeout_s=5))
        tracks = {s: client.xlen(KEYS.tracks("objects", s)) for s in STREAMS[:4]}
        alerts = client.xlen(KEYS.alerts("watch"))
        client.close()
    pushed = published(output)
    # Not more: the services may take most of the duration to start on a loaded machine; every frame pushed counts.
    assert set(pushed) == set(STREAMS[:4]) and all(n >= 5 for n in pushed.values()), output[-4000:]
    answered = Counter((r["stream"], r["seq"]) for r in jsonl_rows(tmp_path / "results.jsonl"))
    assert set(answered) == {(s, i) for s, n in pushed.items() for i in range(n)}, output[-4000:]
    assert max(answered.values()) == 1, "a frame answered twice"
    assert tracks == pushed, f"tracks per camera {tracks}, frames {pushed}"  # one Tracks per result
    assert alerts > 0
    assert all(s in status for s in STREAMS[:4]), status
    assert len([line for line in tail.splitlines() if line.startswith("{")]) == 5, tail
    record(frames=sum(pushed.values()), tracks=sum(tracks.values()), alerts=alerts)
